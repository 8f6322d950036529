"""Online backups of the SQLite database into a folder, keeping the newest few."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

from daemon.storage.schema import utcnow
from daemon.storage.urls import sqlite_file

logger = logging.getLogger(__name__)

_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
_STAMP_PATTERN = r"\d{8}T\d{12}Z"  # what _STAMP_FORMAT writes: date, T, time with microseconds


def back_up_database(url: str, folder: Path, *, keep: int) -> Path | None:
    """Copy the database into `folder` with SQLite's online backup; prune to the newest `keep`.

    Safe while the daemon writes: the backup reads a consistent snapshot (WAL). The copy is
    written under a hidden name and renamed, so a crash never leaves a half backup that looks
    whole. Returns the backup's path, or None for a database that is not a SQLite file.
    """
    source = sqlite_file(url)
    if source is None:
        logger.warning("database backup skipped: %s is not a SQLite file", url)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{source.stem}-{utcnow().strftime(_STAMP_FORMAT)}.db"
    partial = folder / f".{target.name}.partial"
    # Percent-encoded: a "#", "?" or "%" in the path would otherwise end or alter the file name
    # in the URI, and SQLite would back up some other (empty) database.
    reader_uri = f"file:{quote(str(source))}?mode=ro"
    with (
        contextlib.closing(sqlite3.connect(reader_uri, uri=True)) as reader,
        contextlib.closing(sqlite3.connect(partial)) as writer,
    ):
        reader.backup(writer)
    _fsync(partial)
    partial.rename(target)
    _fsync(folder)
    logger.info("database %s backed up to %s", source, target)
    _prune(folder, source.stem, keep, target)
    return target


def _prune(folder: Path, stem: str, keep: int, newest: Path) -> None:
    """Keep `newest` (the backup just made) and the last `keep - 1` others by name.

    The time stamp sorts as text, but a wall clock set back makes the new backup sort first: it
    is never a candidate. Only names this module writes for this stem are removed, never
    another station's (`tigerwatch-north-...db`) in a shared folder.
    """
    pattern = re.compile(re.escape(stem) + "-" + _STAMP_PATTERN + r"\.db")
    others = sorted(
        path
        for path in folder.iterdir()
        if path != newest and pattern.fullmatch(path.name) and path.is_file()
    )
    for old in others[: max(len(others) - (keep - 1), 0)]:
        old.unlink()
        logger.info("removed old database backup %s", old)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
