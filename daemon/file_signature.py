"""What is at a path now, as device, inode, size and mtime: a file replaced or rewritten shows."""

from __future__ import annotations

import os
from pathlib import Path

Signature = tuple[int, int, int, int]


def signature_of(info: os.stat_result) -> Signature:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def file_signature(path: Path | str, *, follow_symlinks: bool) -> Signature | None:
    """The signature of what `path` names now; None when nothing can be looked at there."""
    try:
        return signature_of(Path(path).stat(follow_symlinks=follow_symlinks))
    except OSError:
        return None
