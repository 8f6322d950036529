"""Content hashes (SHA-256) of bytes and of regular files, opened without following links."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, *, chunk_size: int = 1 << 20, dir_fd: int | None = None) -> str:
    """Hex SHA-256 of a regular file's content; never follows a symlink, never blocks on a FIFO.

    With ``dir_fd``, ``path`` is relative to that open folder (see daemon/beneath.py).
    """
    with open_regular_file(path, dir_fd=dir_fd) as stream:
        return sha256_stream(stream, chunk_size=chunk_size)


def sha256_stream(stream: io.FileIO, *, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of what is left to read in an open file."""
    digest = hashlib.sha256()
    while chunk := stream.read(chunk_size):
        digest.update(chunk)
    return digest.hexdigest()


def open_regular_file(path: Path, *, dir_fd: int | None = None) -> io.FileIO:
    # O_NONBLOCK only matters for a FIFO swapped in under us: it makes open() return at once.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return io.FileIO(fd, "rb")
