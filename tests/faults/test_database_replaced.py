"""The database file deleted or replaced under a running daemon: the health check notices (device
and inode), logs one critical line naming the file and the daemon exits with code 4; a restart
after a deletion is one `error:` line and exit 4 (no traceback, no new empty database)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_support import REPO_ROOT, Station, make_station, start_daemon_process
from tests.faults.fault_kit import (
    PROCESS_START_TIMEOUT,
    noise_jpeg,
    report,
    row_done,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.fault

# Generous: the health check runs every 0.5 s here; this only bounds a hang.
EXIT_GUARD_S = 60.0


def replace_with_a_copy(database: Path) -> None:
    """What a careless restore does: a copy renamed over the file (same content, new inode)."""
    copy = database.with_name("restored.db")
    with (
        contextlib.closing(sqlite3.connect(database)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
    copy.replace(database)


def start_and_process_one_frame(station: Station, log: Path) -> subprocess.Popen[bytes]:
    process = start_daemon_process(station, log)
    frame = write_file(station.inbox / "IMG_0001.JPG", noise_jpeg(1))
    wait_until(lambda: row_done(station, frame), "the first frame", PROCESS_START_TIMEOUT)
    return process


def wait_exit(process: subprocess.Popen[bytes], log: Path) -> int:
    try:
        return process.wait(timeout=EXIT_GUARD_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        pytest.fail(f"still running {EXIT_GUARD_S:.0f} s later: {log.read_text()[-1500:]}")


@pytest.mark.parametrize("change", ["deleted", "replaced"])
def test_the_daemon_exits_4_when_its_database_file_changes(
    change: str, tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    log = tmp_path / "daemon.log"
    process = start_and_process_one_frame(station, log)
    changed_at = time.monotonic()
    if change == "deleted":
        station.db_path.unlink()
    else:
        replace_with_a_copy(station.db_path)
    code = wait_exit(process, log)
    seconds = time.monotonic() - changed_at
    text = log.read_text(errors="replace")
    critical = [line for line in text.splitlines() if " CRITICAL " in line]
    figures: dict[str, object] = {
        "exit code": code,
        "file changed -> exit (s)": round(seconds, 2),
        "critical lines": critical,
    }
    restart: subprocess.CompletedProcess[str] | None = None
    if change == "deleted":
        restart = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "-c", str(station.config_path)],
            capture_output=True,
            text=True,
            timeout=PROCESS_START_TIMEOUT,
            cwd=REPO_ROOT,
            check=False,
        )
        figures["restart: exit code"] = restart.returncode
        figures["restart: error lines"] = [
            line for line in restart.stderr.splitlines() if line.startswith("error:")
        ]
    report(f"database file {change} while running", figures)
    assert code == 4, text
    assert len(critical) == 1 and str(station.db_path) in critical[0], critical
    assert "Traceback" not in text
    if restart is not None:
        assert restart.returncode == 4, restart.stderr
        assert "Traceback" not in restart.stderr
        [line] = [line for line in restart.stderr.splitlines() if line.startswith("error:")]
        assert str(station.db_path) in line and "missing" in line
        assert not station.db_path.exists(), "the restart created a new empty database"
