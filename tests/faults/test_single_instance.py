"""One daemon per database: a second `tigerwatch run` on the same database is refused at once
(exit 4, one line naming the lock file and the PID holding it); a daemon killed with SIGKILL
leaves no lock behind that stops the next start."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_support import make_station, ready_lines, start_daemon_process
from tests.faults.fault_kit import PROCESS_START_TIMEOUT, report, wait_until

pytestmark = pytest.mark.fault


def test_a_second_daemon_on_the_same_database_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    lock_file = station.db_path.with_name("tigerwatch.db.lock")
    first_log, second_log, third_log = (tmp_path / f"{n}.log" for n in ("1", "2", "3"))
    first = start_daemon_process(station, first_log)
    processes = [first]
    try:
        wait_until(lambda: ready_lines(first_log) == 1, "the first daemon", PROCESS_START_TIMEOUT)
        started = time.monotonic()
        second = start_daemon_process(station, second_log)
        processes.append(second)
        try:
            second_code = second.wait(timeout=PROCESS_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second daemon runs beside the first: {second_log.read_text()}")
        refused_after = time.monotonic() - started
        second_text = second_log.read_text(errors="replace")
        first_alive = first.poll() is None

        first.send_signal(signal.SIGKILL)  # the kernel drops the flock; the file stays
        first.wait(timeout=30)
        third = start_daemon_process(station, third_log)
        processes.append(third)
        wait_until(lambda: ready_lines(third_log) == 1, "a restart", PROCESS_START_TIMEOUT)
        third.send_signal(signal.SIGTERM)
        third_code = third.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    errors = [line for line in second_text.splitlines() if line.startswith("error:")]
    report(
        "two daemons on one database",
        {
            "second daemon: exit code": second_code,
            "second daemon: seconds from spawn to exit (imports included)": round(refused_after, 1),
            "second daemon: error line": errors,
            "first daemon still running then": first_alive,
            "start after SIGKILL of the holder: ready, exit code": third_code,
        },
    )
    assert second_code == 4, second_text
    assert "Traceback" not in second_text
    assert len(errors) == 1, second_text
    assert str(lock_file) in errors[0] and f"PID {first.pid}" in errors[0], errors
    assert ready_lines(second_log) == 0
    assert first_alive
    assert third_code == 0, third_log.read_text(errors="replace")
    assert lock_file.exists()  # never removed: removing it would let two daemons lock two files


def test_a_second_daemon_naming_a_hard_link_to_the_database_is_refused(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    link = tmp_path / "elsewhere" / "tw.db"
    other = make_station(tmp_path / "other", tiny_model_dir, database={"url": f"sqlite:///{link}"})
    first_log, second_log = tmp_path / "1.log", tmp_path / "2.log"
    first = start_daemon_process(station, first_log)
    processes = [first]
    try:
        wait_until(lambda: ready_lines(first_log) == 1, "the first daemon", PROCESS_START_TIMEOUT)
        link.parent.mkdir()
        link.hardlink_to(station.db_path)  # same inode, another name: another lock file name
        second = start_daemon_process(other, second_log)
        processes.append(second)
        try:
            second_code = second.wait(timeout=PROCESS_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the second daemon runs beside the first: {second_log.read_text()}")
        second_text = second_log.read_text(errors="replace")
        first_alive = first.poll() is None
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    errors = [line for line in second_text.splitlines() if line.startswith("error:")]
    report(
        "a second daemon on a hard link to the database",
        {
            "second daemon: exit code": second_code,
            "second daemon: error line": errors,
            "second daemon: ready lines": ready_lines(second_log),
            "first daemon still running then": first_alive,
        },
    )
    assert second_code == 4, second_text
    assert len(errors) == 1 and "is in use" in errors[0], second_text
    assert ready_lines(second_log) == 0
    assert first_alive
