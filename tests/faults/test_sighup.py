"""SIGHUP (a closed terminal, a stray `kill -HUP`) is ignored by `tigerwatch run`: there is no
reload, and the default action would end the daemon without a line in its log."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.daemon_support import make_station, ready_lines, start_daemon_process
from tests.faults.fault_kit import (
    PROCESS_START_TIMEOUT,
    noise_jpeg,
    report,
    row_done,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.fault


def test_sighup_is_ignored_and_the_daemon_goes_on_working(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    try:
        wait_until(lambda: ready_lines(log) == 1, "the daemon", PROCESS_START_TIMEOUT)
        for _ in range(3):
            process.send_signal(signal.SIGHUP)
        frame = write_file(station.inbox / "IMG_0001.JPG", noise_jpeg(1))
        done = True
        try:
            wait_until(lambda: row_done(station, frame), "the frame after SIGHUP", 60)
        except AssertionError:
            done = False
        alive = process.poll() is None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    text = log.read_text(errors="replace")
    report(
        "three SIGHUPs to a running daemon",
        {
            "exit code (SIGHUP kills: -1)": process.returncode,
            "alive after the SIGHUPs": alive,
            "frame sent after the SIGHUPs classified": done,
            "'SIGHUP is ignored' log lines": text.count("SIGHUP is ignored"),
        },
    )
    assert alive and done, text[-2000:]
    assert code == 0, text[-2000:]
    assert text.count("SIGHUP is ignored") == 1
