"""Log format: journald's (priority prefix, no timestamp) only when stderr is the journal stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.daemon_support import REPO_ROOT

PROGRAM = """
import logging
from daemon.logsetup import configure_logging
configure_logging("INFO")
log = logging.getLogger("daemon.test")
log.info("started")
log.warning("slow disk")
log.error("cannot move %s", "IMG_0001.JPG")
try:
    raise ValueError("bad frame")
except ValueError:
    log.exception("worker failed")
log.critical("database replaced")
"""


def run_logging(stderr_path: Path, journal_stream: str | None) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    if journal_stream is not None:
        env["JOURNAL_STREAM"] = journal_stream
    with stderr_path.open("w") as stderr:
        subprocess.run(
            [sys.executable, "-c", PROGRAM], cwd=REPO_ROOT, env=env, stderr=stderr, check=True
        )
    return stderr_path.read_text().splitlines()


def stream_id(path: Path) -> str:
    status = path.stat()
    return f"{status.st_dev}:{status.st_ino}"


def test_the_journal_gets_priorities_and_no_timestamp(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    stderr.touch()
    lines = run_logging(stderr, stream_id(stderr))
    print("\n".join(lines))
    assert lines[:4] == [
        "<6>INFO daemon.test: started",
        "<4>WARNING daemon.test: slow disk",
        "<3>ERROR daemon.test: cannot move IMG_0001.JPG",
        "<3>ERROR daemon.test: worker failed",
    ]
    # The traceback's lines keep the record's priority, so `journalctl -p err` shows them whole.
    assert lines[4] == "<3>Traceback (most recent call last):"
    assert "<3>ValueError: bad frame" in lines
    assert lines[-1] == "<2>CRITICAL daemon.test: database replaced"
    assert all(line.startswith("<") for line in lines)


def test_another_stream_keeps_the_plain_format(tmp_path: Path) -> None:
    """A unit whose stderr goes to a file, or a shell that inherited the variable: timestamps."""
    stderr = tmp_path / "stderr"
    elsewhere = tmp_path / "journal"
    elsewhere.touch()
    for journal_stream in (None, stream_id(elsewhere)):
        lines = run_logging(stderr, journal_stream)
        assert lines[0].endswith(" INFO daemon.test: started"), lines[0]
        assert lines[0][:4].isdigit()  # the asctime stamp: 2026-12-02 ...
        assert not any(line.startswith("<") for line in lines)
