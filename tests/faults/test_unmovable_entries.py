"""One unmovable inbox entry (a FIFO, an unwritable FTP folder) holds up nothing but itself.

Each test runs the real daemon as a process, with the default `destination_retry_seconds`
(30 s): the old daemon paused every move (and the intake of new work) behind such an entry
for that long, over and over. Here the entry is tried `max_move_attempts` times, recorded as
stuck with its reason, left in place, and `tigerwatch status` lists it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import Worker as WorkerSettings
from tests.daemon_support import (
    Station,
    check_invariant,
    images_done,
    make_station,
    query,
    start_daemon_process,
    stop_daemon_process,
    tigerwatch_status,
    wait_for,
)
from tests.faults.fault_kit import (
    PROCESS_START_TIMEOUT,
    SETTLE_TIMEOUT,
    noise_jpeg,
    report,
    scalar,
    wait_until,
    write_file,
)

RETRY_SECONDS = 30.0  # the default: what a station runs with
STUCK_TIMEOUT = RETRY_SECONDS + 90.0


def unmovable_station(tmp_path: Path, model_dir: Path, move_attempts: int) -> Station:
    worker: dict[str, object] = {
        "batch_max_wait_seconds": 0.2,
        "retry_delay_seconds": 0.2,
        "max_decode_attempts": 2,
        "destination_retry_seconds": RETRY_SECONDS,
    }
    # Set only where the daemon knows it, so that these tests also show what a daemon without
    # it does (its config would refuse an unknown key before anything else could be seen).
    if "max_move_attempts" in WorkerSettings.model_fields:
        worker["max_move_attempts"] = move_attempts
    return make_station(tmp_path / "station", model_dir, worker=worker)


@pytest.fixture
def daemon_log(tmp_path: Path) -> Path:
    return tmp_path / "daemon.log"


@pytest.fixture
def running(
    tmp_path: Path, tiny_model_dir: Path, daemon_log: Path, request: pytest.FixtureRequest
) -> Iterator[Station]:
    """A station with its daemon process, ready; stopped with SIGTERM (exit 0) afterwards.

    Parametrised (indirectly) with `max_move_attempts`.
    """
    station = unmovable_station(tmp_path, tiny_model_dir, request.param)
    process = start_daemon_process(station, daemon_log)
    try:
        ready = wait_for(
            lambda: daemon_log.exists() and "ready in" in daemon_log.read_text(errors="replace"),
            PROCESS_START_TIMEOUT,
        )
        assert ready, f"daemon not ready: {daemon_log.read_text(errors='replace')[-2000:]}"
        yield station
    finally:
        try:
            exit_code = stop_daemon_process(process)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert exit_code == 0, f"exit code {exit_code}"


def stuck_rows(station: Station) -> list[tuple[str, str]]:
    if scalar(station, "SELECT count(*) FROM sqlite_master WHERE name = 'stuck_moves'") == 0:
        return []  # the old schema has no such table: nothing is ever recorded as stuck
    return [
        (str(path), str(reason))
        for path, reason in query(station, "SELECT source_path, reason FROM stuck_moves")
    ]


def move_complaints(log: Path, entry: Path) -> list[str]:
    """The routing's warnings and errors about one entry (its retries log at DEBUG only)."""
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if " daemon.delivery." in line
        and str(entry) in line
        and (" WARNING " in line or " ERROR " in line)
    ]


def stat_is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(path.lstat().st_mode)


@pytest.mark.fault
@pytest.mark.parametrize("running", [1], indirect=True)  # a FIFO never becomes a file
def test_a_fifo_in_the_inbox_holds_up_no_good_frame(running: Station, daemon_log: Path) -> None:
    station = running
    fifo = station.inbox / "pipe.jpg"
    os.mkfifo(fifo)
    wait_until(lambda: scalar(station, "SELECT count(*) FROM rejects") == 1, "the FIFO's row")
    frames = [
        write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(number))
        for number in range(100)
    ]
    classified = wait_for(lambda: images_done(station) == len(frames), SETTLE_TIMEOUT)
    done_while_fifo_waits = images_done(station)
    # (Not waited for when the frames were held up: that failure is the figure.)
    stuck = classified and wait_for(lambda: stuck_rows(station) != [], STUCK_TIMEOUT)
    status = tigerwatch_status(station)
    complaints = move_complaints(daemon_log, fifo)  # with one try: only the verdict
    report(
        "a FIFO named pipe.jpg among 100 good frames",
        {
            "frames classified and moved": f"{done_while_fifo_waits} of {len(frames)}",
            "FIFO recorded as stuck": stuck_rows(station) or "no",
            "warning/error lines about it": len(complaints),
        },
    )
    assert classified, f"{done_while_fifo_waits} of {len(frames)} frames classified"
    assert stuck, "the FIFO was never recorded as stuck"
    assert stat_is_fifo(fifo), "the FIFO was not left in place"
    assert len(complaints) == 1, complaints  # the verdict, once
    assert str(fifo) in status and "not a regular file" in status, status
    assert "progress:       ok" in status, status
    assert check_invariant(station, stuck=frozenset({fifo})) == []


@pytest.fixture
def make_unwritable() -> Iterator[list[Path]]:
    """Make folders refuse the daemon's unlinks: chmod 0555 as a user, `chattr +i` as root.

    Root ignores directory permissions, so as root the folder is made immutable instead, which
    the kernel enforces for root too (EPERM, where a user gets EACCES).
    """
    folders: list[Path] = []
    yield folders
    for folder in folders:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def lock_folder(folder: Path, locked: list[Path]) -> str:
    if os.geteuid() != 0:
        folder.chmod(0o555)  # like an FTP account's 2755 folder, seen from the daemon's user
        locked.append(folder)
        return "chmod 0555 (not root)"
    if shutil.which("chattr") is None:
        pytest.skip("running as root and chattr is not installed: no way to refuse root an unlink")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
    locked.append(folder)
    return "chattr +i (root)"


@pytest.mark.fault
@pytest.mark.parametrize("running", [2], indirect=True)  # stuck after one retry, 30 s in
def test_an_unwritable_ftp_folder_holds_up_only_its_own_frame(
    running: Station, daemon_log: Path, make_unwritable: list[Path]
) -> None:
    station = running
    ftp_folder = station.inbox / "ftp-upload"
    ftp_folder.mkdir()
    locked_frame = write_file(ftp_folder / "IMG_9999.JPG", noise_jpeg(9_999))
    how = lock_folder(ftp_folder, make_unwritable)
    # First in the queue: the old daemon stopped every round of moves at this frame.
    wait_until(lambda: scalar(station, "SELECT count(*) FROM images") == 1, "the locked row")
    frames = [
        write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(number))
        for number in range(28)
    ]
    moved = wait_for(lambda: images_done(station) == len(frames), SETTLE_TIMEOUT)
    done_while_locked = images_done(station)
    stuck = moved and wait_for(lambda: stuck_rows(station) != [], STUCK_TIMEOUT)
    status = tigerwatch_status(station)
    complaints = move_complaints(daemon_log, locked_frame)
    report(
        "an FTP sub-folder the daemon cannot write, among 28 good frames",
        {
            "made unwritable by": how,
            "frames classified and moved": f"{done_while_locked} of {len(frames) + 1}",
            "frames stuck": len(stuck_rows(station)),
            "stuck reason": stuck_rows(station)[0][1] if stuck else "-",
            "warning/error lines about it": len(complaints),
        },
    )
    assert moved, f"{done_while_locked} of {len(frames)} movable frames moved"
    assert stuck, "the locked frame was never recorded as stuck"
    assert locked_frame.is_file(), "the locked frame was not left in place"
    assert len(complaints) == 2, complaints  # the first failure and the verdict, no retries
    assert str(locked_frame) in status and "inbox side" in status, status
    assert "progress:       ok" in status, status
    assert check_invariant(station, stuck=frozenset({locked_frame})) == []
