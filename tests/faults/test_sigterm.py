"""Fault 8: SIGTERM at three moments (start-up before READY, mid-batch, during moves): the real
daemon process exits 0 well within systemd's TimeoutStopSec, and a restart redoes the
interrupted work without classifying anything twice."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon_support import (
    REPO_ROOT,
    Station,
    check_invariant,
    make_station,
    query,
    settled,
    start_daemon_process,
)
from tests.faults.fault_kit import (
    PROCESS_START_TIMEOUT,
    count,
    migrated,
    noise_jpeg,
    report,
    sha256_hex,
    wait_until,
    with_comment,
)
from tests.notify_receiver import NotifyReceiver

pytestmark = pytest.mark.fault

FRAMES = 48
BATCH = 8
DRAIN_TIMEOUT = 120.0


def unit_stop_timeout() -> float:
    unit = (REPO_ROOT / "systemd" / "tigerwatch.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)\s*$", unit, re.MULTILINE)
    assert match, "TimeoutStopSec missing from the unit"
    return float(match.group(1))


# --- systemd's notify socket ---------------------------------------------------------------------


@pytest.fixture
def notify(notify_receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch) -> NotifyReceiver:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_receiver.path))
    return notify_receiver


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemon subprocesses started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


# --- the work ------------------------------------------------------------------------------------


def stage_frames(staging: Path) -> dict[str, bytes]:
    """Full-size frames (1600x1200), distinct bytes, so a stream of batches takes a while."""
    frame = noise_jpeg(800, size=(1600, 1200))
    contents = {f"IMG_{n:04d}.JPG": with_comment(frame, f"frame {n}") for n in range(FRAMES)}
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (staging / name).write_bytes(data)
    return contents


def publish(staging: Path, inbox: Path) -> None:
    """All at once, the way an upload tool publishes: rename() from outside the inbox."""
    for path in sorted(staging.iterdir()):
        path.rename(inbox / path.name)


@dataclass(frozen=True)
class Snapshot:
    queued: int
    routing: int
    moving: int  # destination recorded, file not yet recorded as moved
    done: int
    classifications: int

    @classmethod
    def take(cls, station: Station) -> Snapshot:
        """One SELECT, so the counts come from one consistent read of the database."""
        row = query(
            station,
            "SELECT"
            " (SELECT count(*) FROM images WHERE state = 'queued'),"
            " (SELECT count(*) FROM images WHERE state = 'routing'),"
            " (SELECT count(*) FROM images WHERE state = 'routing'"
            "  AND intended_path IS NOT NULL),"
            " (SELECT count(*) FROM images WHERE state = 'done'),"
            " (SELECT count(*) FROM classifications)",
        )[0]
        return cls(*(int(str(value)) for value in row))


# --- the three moments ---------------------------------------------------------------------------


def wait_polling(
    predicate: Callable[[], bool], what: str, process: subprocess.Popen[bytes]
) -> None:
    def check() -> bool:
        assert process.poll() is None, f"daemon exited before {what}"
        return predicate()

    wait_until(check, what, timeout=PROCESS_START_TIMEOUT, interval=0.005)


def database_opened(station: Station) -> bool:
    """The database file exists: run_daemon has installed its signal handlers by then."""
    return station.db_path.exists()


def first_batch_committed(station: Station) -> bool:
    return migrated(station) and count(station, "classifications") > 0


def moves_in_progress(station: Station) -> bool:
    if not migrated(station):
        return False
    return Snapshot.take(station).moving > 0


MOMENTS: dict[str, Callable[[Station], bool]] = {
    "start-up, before READY": database_opened,
    "mid-batch": first_batch_committed,
    "during moves": moves_in_progress,
}


def sigterm_and_time(process: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM, then the exit code: the wait is as long as systemd's before its SIGKILL, so
    it fails only where systemd would kill the daemon. The seconds are a printed figure."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=unit_stop_timeout())
    return code, time.monotonic() - sent


def moves_logged_after_signal(log_text: str) -> int:
    """Moves the first process finished after it logged the SIGTERM (the rest of a batch)."""
    after = log_text.split("received SIGTERM", 1)[1]
    return len(
        re.findall(r" -> .* \((review|uncertain|archive|duplicates|quarantine)\)$", after, re.M)
    )


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigterm_exits_cleanly_and_a_restart_redoes_the_work(
    moment: str,
    tmp_path: Path,
    tiny_model_dir: Path,
    notify: NotifyReceiver,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={"name_or_path": str(tiny_model_dir), "batch_size": BATCH, "threads": 1},
    )
    contents = stage_frames(tmp_path / "staging")
    before_ready = moment.startswith("start-up")
    first_log = tmp_path / "first.log"
    if before_ready:  # waiting in the inbox when the daemon starts
        publish(tmp_path / "staging", station.inbox)
    processes.append(start_daemon_process(station, first_log))
    first = processes[0]
    if not before_ready:
        wait_polling(lambda: "READY=1" in notify.lines(), "READY=1", first)
        publish(tmp_path / "staging", station.inbox)
    wait_polling(lambda: MOMENTS[moment](station), moment, first)
    at_signal = Snapshot.take(station) if migrated(station) else "database being created"
    code, stop_seconds = sigterm_and_time(first)
    log_text = first_log.read_text(errors="replace")
    lines = notify.lines()
    at_exit = Snapshot.take(station)

    assert code == 0, log_text
    assert "received SIGTERM" in log_text
    assert "STOPPING=1" in lines
    if before_ready:
        assert lines[0] == "STOPPING=1", f"READY=1 came before the signal: {lines}"
    else:
        assert isinstance(at_signal, Snapshot) and at_signal.done < len(contents), "too late"
        assert at_exit.queued > 0, "nothing left for the restart: the work was not interrupted"

    second_log = tmp_path / "second.log"
    processes.append(start_daemon_process(station, second_log))
    wait_until(
        lambda: Snapshot.take(station).done == len(contents) and settled(station),
        "the restarted daemon to finish the work",
        timeout=DRAIN_TIMEOUT,
        interval=0.1,
    )
    restart_code, restart_stop_seconds = sigterm_and_time(processes[1])
    assert restart_code == 0, second_log.read_text(errors="replace")

    rows = query(station, "SELECT image_id, count(*) FROM classifications GROUP BY image_id")
    per_image = [(image_id, int(str(number))) for image_id, number in rows]
    report(
        f"SIGTERM {moment}",
        {
            "frames (1600x1200), batch_size": f"{len(contents)}, {BATCH}",
            "state at the signal": at_signal,
            "state after the exit": at_exit,
            "SIGTERM -> exit (s)": round(stop_seconds, 2),
            "unit's TimeoutStopSec, the wait's limit (s)": unit_stop_timeout(),
            "moves finished after the signal": moves_logged_after_signal(log_text),
            "notify lines from the first process": lines,
            "restart: SIGTERM -> exit when idle (s)": round(restart_stop_seconds, 2),
            "classifications per image (max)": max(n for _, n in per_image),
        },
    )
    assert len(per_image) == len(contents)
    assert all(n == 1 for _, n in per_image), "an image was classified twice"
    assert check_invariant(station, {sha256_hex(data) for data in contents.values()}) == []
