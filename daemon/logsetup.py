"""Configures logging once, at the program's edge: journald's format under systemd, else plain."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The journal stamps each line itself; the level travels as a syslog priority prefix instead.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
# sd-daemon(3) priorities: journalctl -p err shows <3> and more urgent.
SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    """Prefixes every line of a record (tracebacks too) with its `<priority>`."""

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at each record (a test's capture is replaced per test)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def writes_to_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is the journal stream systemd connected ($JOURNAL_STREAM = dev:inode).

    Comparing the inode keeps the plain format when a unit's stderr is redirected to a file, or
    when a program run from the service's shell inherits the variable."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no real file behind the stream (a test's capture)
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def configure_logging(level: str) -> None:
    handler = CurrentStderrHandler()
    if writes_to_journal(sys.stderr, os.environ):
        handler.setFormatter(JournalFormatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Library chatter that says nothing about the station's files.
    for noisy in ("watchdog", "alembic", "PIL", "urllib3", "httpx", "httpx2", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
