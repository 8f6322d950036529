"""Walk an inbox tree and yield every candidate file; the periodic safety net for lost events."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from daemon.intake.names import NameFilter

logger = logging.getLogger(__name__)


def scan_inbox(root: Path, name_filter: NameFilter) -> Iterator[Path]:
    """Yield candidate files under `root`, depth first, each folder's entries in name order.

    Candidates are non-directories with accepted names: regular files, and also symlinks, FIFOs
    and other special files, so the daemon can quarantine them instead of leaving them in the
    inbox forever. Symlinked folders are never followed, ignored folder names are skipped, and a
    folder that cannot be read is logged and skipped: a scan never raises.
    """
    pending = [root]
    while pending:
        folder = pending.pop()
        files, subfolders = _read_folder(folder, name_filter)
        yield from files
        # Reversed so that popping from the end visits subfolders in name order.
        pending.extend(reversed(subfolders))


def _read_folder(folder: Path, name_filter: NameFilter) -> tuple[list[Path], list[Path]]:
    """Split one folder's entries into candidate files and subfolders to descend into."""
    files: list[Path] = []
    subfolders: list[Path] = []
    for entry in _sorted_entries(folder):
        if name_filter.is_ignored_name(entry.name):
            continue
        try:
            is_real_folder = entry.is_dir(follow_symlinks=False)
        except OSError as err:
            logger.warning("Scan skipped %s: cannot tell its type: %s", entry.path, err)
            continue
        if is_real_folder:
            subfolders.append(Path(entry.path))
        elif name_filter.accepts_file(Path(entry.name)):
            files.append(Path(entry.path))
    return files, subfolders


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as err:
        logger.warning("Scan skipped folder %s: %s", folder, err)
        return []
