"""Reach a file under an inbox one folder at a time, never through a symbolic link."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# ELOOP: the component is a symlink (O_NOFOLLOW); ENOTDIR: it is no folder at all.
_NOT_A_REAL_FOLDER = frozenset({errno.ELOOP, errno.ENOTDIR})


class UnsafePathError(OSError):
    """The path is outside every inbox, or a folder on the way to it is a symbolic link."""


class FolderMissingError(FileNotFoundError):
    """A folder on the way to the path (or the inbox itself) does not exist (any more)."""


def inbox_of(path: Path, inboxes: Sequence[Path]) -> Path | None:
    """The inbox that holds ``path`` (the deepest one, should inboxes ever nest)."""
    holding = [root for root in inboxes if root in path.parents]
    return max(holding, key=lambda root: len(root.parts), default=None)


@contextmanager
def folder_beneath(path: Path, inboxes: Sequence[Path]) -> Iterator[int]:
    """Yield a descriptor of the folder holding ``path``, opened from its inbox downwards.

    O_NOFOLLOW only guards the last component of a path: so every folder below the inbox is
    opened by itself, relative to the one above it, and a link on the way raises
    UnsafePathError instead of leading outside. The inbox root itself was resolved when the
    configuration was loaded. A missing folder raises FolderMissingError.
    """
    root = inbox_of(path, inboxes)
    if root is None:
        raise UnsafePathError(errno.EXDEV, "not inside any inbox", str(path))
    parts = path.parent.relative_to(root).parts
    if any(part in (".", "..") for part in parts):
        raise UnsafePathError(errno.EINVAL, "path climbs out of its folder", str(path))
    try:
        fd = os.open(root, _FOLDER_FLAGS)
    except FileNotFoundError as err:
        raise FolderMissingError(errno.ENOENT, "inbox missing", str(path)) from err
    try:
        for part in parts:
            fd = _step(fd, part, path)
        yield fd
    finally:
        os.close(fd)


def _step(fd: int, part: str, path: Path) -> int:
    """Open sub-folder ``part`` of ``fd`` without following a link; closes ``fd`` on success."""
    try:
        child = os.open(part, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as err:
        if err.errno in _NOT_A_REAL_FOLDER:
            message = f"folder {part!r} on the way is a symbolic link or no folder"
            raise UnsafePathError(errno.ELOOP, message, str(path)) from err
        if err.errno == errno.ENOENT:
            raise FolderMissingError(errno.ENOENT, f"folder {part!r} missing", str(path)) from err
        raise
    os.close(fd)
    return child


def walk_beneath(root: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """(descriptor, path, names of its non-folders) for ``root`` and every folder below it.

    Unlike os.fwalk, a symlinked folder is never even opened. A folder that cannot be opened
    or listed is skipped; each descriptor is valid only until the next item.
    """
    try:
        fd = os.open(root, _FOLDER_FLAGS)
    except OSError:
        return
    yield from _walk(fd, root)


def _walk(fd: int, path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    try:
        try:
            with os.scandir(fd) as listing:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
        except OSError:
            return
        yield fd, path, [name for name, is_folder in entries if not is_folder]
        for name in (name for name, is_folder in entries if is_folder):
            try:
                child = os.open(name, _FOLDER_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                continue
            yield from _walk(child, path / name)
    finally:
        os.close(fd)
