"""Recovery after a crash: how far an interrupted move got, finished from what is on disk."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from enum import StrEnum
from pathlib import Path

from daemon.delivery.fileops import Entry, fsync_directory, fsync_file_data, link_target
from daemon.delivery.naming import is_partial_of
from daemon.hashing import sha256_file

logger = logging.getLogger(__name__)


class SettleOutcome(StrEnum):
    """What settle_move found and did for one half-finished move."""

    ALREADY_MOVED = "already_moved"
    COMPLETED = "completed"
    DESTINATION_TAKEN = "destination_taken"
    NOT_STARTED = "not_started"
    MISSING = "missing"


def settle_move(source: Path, destination: Path, sha256: str | None) -> SettleOutcome:
    """settle_entry for a source given by path."""
    return settle_entry(Entry.at(source), destination, sha256)


def settle_entry(source: Entry, destination: Path, sha256: str | None) -> SettleOutcome:
    """Decide, from what exists on disk, how far an interrupted move got, and finish it.

    ``sha256`` is the recorded content hash (None for a symlink). Only a source that is provably
    the same as the destination is ever deleted.
    """
    source_exists = _lexists(source)
    destination_exists = os.path.lexists(destination)
    if source_exists or destination_exists:
        # With neither present a temp copy may be all that is left: keep it for a human.
        _remove_stray_partials(destination)
    if not source_exists:
        return _settle_without_source(source, destination, destination_exists)
    if not destination_exists:
        return SettleOutcome.NOT_STARTED
    if not _same_file_or_content(source, destination, sha256):
        logger.debug("settle %s: %s holds something else", source.shown, destination)
        return SettleOutcome.DESTINATION_TAKEN
    _finish_interrupted_move(source, destination)
    return SettleOutcome.COMPLETED


def _lexists(entry: Entry) -> bool:
    try:
        entry.lstat()
    except FileNotFoundError:
        return False
    return True


def _settle_without_source(
    source: Entry, destination: Path, destination_exists: bool
) -> SettleOutcome:
    if not destination_exists:
        logger.debug("settle: neither %s nor %s exists", source.shown, destination)
        return SettleOutcome.MISSING
    # After kill -9 (no power cut) the last steps may still sit only in the page cache.
    fsync_directory(destination.parent)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        source.fsync_folder()
    return SettleOutcome.ALREADY_MOVED


def _same_file_or_content(source: Entry, destination: Path, sha256: str | None) -> bool:
    source_stat, destination_stat = source.lstat(), destination.lstat()
    if os.path.samestat(source_stat, destination_stat):
        return True  # the link step finished, the unlink did not
    if stat.S_ISLNK(source_stat.st_mode) and stat.S_ISLNK(destination_stat.st_mode):
        return link_target(source) == link_target(Entry.at(destination))
    if not (stat.S_ISREG(source_stat.st_mode) and stat.S_ISREG(destination_stat.st_mode)):
        return False
    destination_digest = sha256_file(destination)
    if sha256 is not None and destination_digest != sha256:
        return False
    # Also hash the source: if it changed since it was recorded, deleting it would lose data.
    source_digest = sha256_file(Path(source.name), dir_fd=source.dir_fd)
    return source_digest == destination_digest


def _finish_interrupted_move(source: Entry, destination: Path) -> None:
    if destination.is_file() and not destination.is_symlink():
        fsync_file_data(Entry.at(destination))
    fsync_directory(destination.parent)
    os.unlink(source.name, dir_fd=source.dir_fd)
    source.fsync_folder()
    logger.debug("settle: finished move %s -> %s", source.shown, destination)


def _remove_stray_partials(destination: Path) -> None:
    directory = destination.parent
    if not directory.is_dir():
        return
    # Also the temp files of its sidecar note: a crash inside write_sidecar leaves one, even
    # after the note itself was published.
    names = (destination.name, destination.name + ".txt")
    removed = False
    with os.scandir(directory) as entries:
        for entry in entries:
            if any(is_partial_of(entry.name, name) for name in names):
                Path(entry.path).unlink()
                removed = True
                logger.debug("removed stray temp file %s", entry.path)
    if removed:
        fsync_directory(directory)
