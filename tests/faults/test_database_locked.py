"""Another process holds the database EXCLUSIVE for 15 s: the daemon waits and loses nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.daemon_support import (
    Station,
    check_invariant,
    images_done,
    make_station,
    noise_jpeg,
    query,
    settled,
    sha256_of,
    start_daemon_process,
    stop_daemon_process,
    wait_for,
)

LOCK_SECONDS = 15.0
BEFORE_LOCK = 200  # the daemon is busy with these when the lock is taken
DURING_LOCK = 100  # these arrive while the lock is held
TIMEOUT = 90.0

# A second program on the station (a backup script, a curious sqlite3 shell) takes the write
# lock and sits on it. It prints wall-clock times, comparable with the rows' done_at (UTC).
LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    connection = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")
    print("locked", time.time(), flush=True)
    time.sleep(float(sys.argv[2]))
    print("releasing", time.time(), flush=True)
    connection.execute("ROLLBACK")
    connection.close()
    """
)


def write_frames(folder: Path, first: int, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for number in range(first, first + count):
        frames.append(folder / f"IMG_{number:05d}.JPG")
        frames[-1].write_bytes(noise_jpeg(50_000 + number))
    return frames


def publish(frames: list[Path], inbox: Path) -> None:
    for frame in frames:
        frame.rename(inbox / frame.name)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def stamp(output: str, word: str) -> float | None:
    for line in output.splitlines():
        if line.startswith(word + " "):
            return float(line.split()[1])
    return None


def done_times(station: Station) -> list[float]:
    """Wall-clock seconds at which rows were marked done (images and duplicates)."""
    rows = query(
        station,
        "SELECT done_at FROM images WHERE done_at IS NOT NULL"
        " UNION ALL SELECT done_at FROM duplicates WHERE done_at IS NOT NULL",
    )
    return [datetime.fromisoformat(str(row[0])).replace(tzinfo=UTC).timestamp() for row in rows]


@pytest.mark.fault
def test_exclusive_lock_held_by_another_process_for_15_s_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    early = write_frames(tmp_path / "outside", 0, BEFORE_LOCK)
    late = write_frames(tmp_path / "outside", BEFORE_LOCK, DURING_LOCK)
    contents = {sha256_of(frame) for frame in early + late}
    daemon_log = tmp_path / "daemon.log"
    locker_out = tmp_path / "locker.out"
    process = start_daemon_process(station, daemon_log)
    try:
        ready = wait_for(lambda: "ready in" in log_text(daemon_log), TIMEOUT, interval=0.2)
        assert ready, f"daemon not ready:\n{log_text(daemon_log)[-3000:]}"
        publish(early, station.inbox)
        assert wait_for(lambda: images_done(station) >= 10, TIMEOUT), "the daemon is not working"

        with locker_out.open("w") as out:
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(station.db_path), str(LOCK_SECONDS)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        assert wait_for(lambda: "locked" in log_text(locker_out), TIMEOUT), log_text(locker_out)
        done_at_lock = images_done(station)  # reads still work: WAL lets readers past a writer
        publish(late, station.inbox)
        locker_ended = wait_for(lambda: locker.poll() is not None, LOCK_SECONDS + TIMEOUT)
        released = time.monotonic()
        assert locker_ended and locker.returncode == 0, log_text(locker_out)
        alive_after_lock = process.poll() is None

        drained = wait_for(
            lambda: images_done(station) == len(contents) and settled(station), TIMEOUT
        )
        drain_seconds = time.monotonic() - released
        assert process.poll() is None, f"daemon exited:\n{log_text(daemon_log)[-3000:]}"
    finally:
        exit_code = stop_daemon_process(process) if process.poll() is None else process.returncode

    output = log_text(locker_out)
    locked_at, releasing_at = stamp(output, "locked"), stamp(output, "releasing")
    assert locked_at is not None and releasing_at is not None, output
    finished = done_times(station)
    during_lock = [when for when in finished if locked_at < when < releasing_at]
    log = log_text(daemon_log)
    print("\n==== fault: database held EXCLUSIVE by another process ====")
    print(f"lock held:                      {releasing_at - locked_at:.1f} s")
    print(f"files before / during the lock: {BEFORE_LOCK} / {DURING_LOCK}")
    print(f"images done when it was taken:  {done_at_lock}")
    print(f"rows completed while held:      {len(during_lock)}")
    print(f"rows completed after release:   {sum(when >= releasing_at for when in finished)}")
    print(f"'database unavailable' lines:   {log.count('database unavailable')}")
    print(f"drain after the lock released:  {drain_seconds:.1f} s")
    print(f"daemon exit code on SIGTERM:    {exit_code}")
    print("=" * 56)

    assert alive_after_lock, f"the daemon died under the lock:\n{log[-3000:]}"
    assert drained, f"backlog not drained after the lock:\n{log[-3000:]}"
    assert during_lock == []  # the lock really held: nothing was committed under it
    assert done_at_lock < len(contents)  # there was work left when the lock was taken
    assert "Traceback" not in log and "thread failed" not in log, log[-3000:]
    assert exit_code == 0
    assert check_invariant(station, contents) == []
