"""Walk an inbox tree and yield every candidate file; the periodic safety net for lost events."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from daemon.intake.names import NameFilter

logger = logging.getLogger(__name__)

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def scan_inbox(root: Path, name_filter: NameFilter) -> Iterator[Path]:
    """Yield candidate files under `root`, depth first, each folder's entries in name order.

    Candidates are non-directories with accepted names: regular files, and also symlinks, FIFOs
    and other special files, so the daemon can quarantine them instead of leaving them in the
    inbox forever. Symlinked folders are never followed, not even opened: each folder is opened
    with O_NOFOLLOW relative to the one above it and listed through its descriptor, so one
    swapped for a link between two steps is skipped. Ignored folder names are skipped, and a
    folder that cannot be read is logged and skipped: a scan never raises.
    """
    try:
        fd = os.open(root, _FOLDER_FLAGS)
    except OSError as err:
        logger.warning("Scan skipped folder %s: %s", root, err)
        return
    yield from _scan(fd, root, name_filter)


def _scan(fd: int, folder: Path, name_filter: NameFilter) -> Iterator[Path]:
    """Yield the candidates of the open folder `fd`, then of its sub-folders; closes `fd`."""
    try:
        files, subfolders = _read_folder(fd, folder, name_filter)
        yield from files
        for name in subfolders:
            try:
                child = os.open(name, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as err:
                logger.warning("Scan skipped folder %s: %s", folder / name, err)
                continue
            yield from _scan(child, folder / name, name_filter)
    finally:
        os.close(fd)


def _read_folder(fd: int, folder: Path, name_filter: NameFilter) -> tuple[list[Path], list[str]]:
    """Split one folder's entries into candidate files and sub-folders to descend into."""
    files: list[Path] = []
    subfolders: list[str] = []
    for entry in _sorted_entries(fd, folder):
        if name_filter.is_ignored_name(entry.name):
            continue
        try:
            is_real_folder = entry.is_dir(follow_symlinks=False)
        except OSError as err:
            logger.warning("Scan skipped %s: cannot tell its type: %s", folder / entry.name, err)
            continue
        if is_real_folder:
            subfolders.append(entry.name)
        elif name_filter.accepts_file(Path(entry.name)):
            files.append(folder / entry.name)
    return files, subfolders


def _sorted_entries(fd: int, folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(fd) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as err:
        logger.warning("Scan skipped folder %s: %s", folder, err)
        return []
