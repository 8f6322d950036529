"""One daemon per database file: an exclusive lock beside it, and a check it is still the same file.

The lock is `<database>.lock`, held with flock(LOCK_EX | LOCK_NB) for the daemon's life; the
kernel releases it when the process ends, however it ends, so a stale file never blocks a start.
The file is never removed (removing it would let two daemons lock two different inodes). It
holds the PID of the daemon that holds it and, once the database is open, the database file's
device and inode: a start that finds that line but no database refuses to create an empty one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.storage.database import DatabaseError
from daemon.storage.urls import sqlite_file

_IDENTITY_KEY = "database"


@dataclass(frozen=True)
class FileIdentity:
    """Which file a path named when it was looked at: st_dev and st_ino."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        """The identity of the file at `path` now; None when there is none."""
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        return cls(info.st_dev, info.st_ino)

    def __str__(self) -> str:
        return f"{self.device}:{self.inode}"


class InstanceLock:
    """The lock on one SQLite database file, held by this process until `release`."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None
        self.identity: FileIdentity | None = None
        self._known_identity: str | None = None  # the last daemon's line, kept until replaced

    def acquire(self) -> None:
        """Take the lock or raise DatabaseError naming the lock file and the PID holding it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DatabaseError(
                f"database {self.database} is in use: {self.path} is locked by PID {holder}, "
                "another tigerwatch daemon; only one may run per database"
            ) from None
        self._fd = fd
        self._known_identity = _read_fields(fd).get(_IDENTITY_KEY)
        self._check_not_lost()
        self._write(pid=os.getpid())

    def note_database_opened(self) -> None:
        """Record which file the database is, so that a later change of it can be noticed."""
        self.identity = FileIdentity.of(self.database)
        if self.identity is not None:
            self._known_identity = str(self.identity)
        self._write(pid=os.getpid())

    def database_changed(self) -> str | None:
        """Why the database file is no longer the one opened (gone, replaced); None if it is."""
        if self.identity is None:
            return None
        now = FileIdentity.of(self.database)
        if now is None:
            return "was deleted"
        if now != self.identity:
            return f"was replaced (device:inode {self.identity} is now {now})"
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def _check_not_lost(self) -> None:
        if self._known_identity is not None and not os.path.lexists(self.database):
            self.release()
            raise DatabaseError(
                f"database {self.database} is missing, but {self.path} shows that a daemon used "
                "it: restore it from a backup (database.backup.folder), or create a new empty "
                "one with `tigerwatch db upgrade`"
            )

    def _write(self, *, pid: int) -> None:
        assert self._fd is not None
        known = self._known_identity
        text = f"pid {pid}\n" + (f"{_IDENTITY_KEY} {known}\n" if known else "")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)


def lock_database(url: str) -> InstanceLock | None:
    """Lock the SQLite file of `url` for this process; None for a database that is no file."""
    database = sqlite_file(url)
    if database is None:
        return None  # a server database would take an advisory lock of its own (not yet)
    lock = InstanceLock(database)
    try:
        lock.acquire()
    except OSError as err:
        raise DatabaseError(f"database {database}: cannot lock {lock.path}: {err}") from err
    return lock


def _read_fields(fd: int) -> dict[str, str]:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 4096, 0).decode()
        return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    return {}


def _read_pid(fd: int) -> str:
    # The holder writes its PID right after locking: an empty file is a daemon starting.
    return _read_fields(fd).get("pid", "unknown (starting)")
