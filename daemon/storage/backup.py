"""Online backups of the SQLite database into a folder, keeping the newest few."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from daemon.storage.schema import utcnow
from daemon.storage.urls import sqlite_file

logger = logging.getLogger(__name__)


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
    target = folder / f"{source.stem}-{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}.db"
    partial = folder / f".{target.name}.partial"
    with (
        contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reader,
        contextlib.closing(sqlite3.connect(partial)) as writer,
    ):
        reader.backup(writer)
    _fsync(partial)
    partial.rename(target)
    _fsync(folder)
    _prune(folder, source.stem, keep)
    logger.info("database %s backed up to %s", source, target)
    return target


def _prune(folder: Path, stem: str, keep: int) -> None:
    # The time stamp sorts as text; only files this module named are ever removed.
    backups = sorted(folder.glob(f"{stem}-*.db"))
    for old in backups[:-keep]:
        old.unlink()
        logger.info("removed old database backup %s", old)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
