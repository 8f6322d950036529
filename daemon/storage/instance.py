"""One daemon per database file: an exclusive lock beside it, and a check it is still the same file.

The lock is `<database>.lock`, held with flock(LOCK_EX | LOCK_NB) for the daemon's life; the
kernel releases it when the process ends, however it ends, so a stale file never blocks a start.
The file is never removed (removing it would let two daemons lock two different inodes). It
holds the PID of the daemon that holds it and, once the database is open, the database file's
device and inode: a start that finds that line but no database refuses to create an empty one.

The lock file's name comes from the database's real path, and the database file itself is held
with flock too once it exists: a second daemon naming it through a symbolic or a hard link (same
inode, another name) is refused. flock is separate from the POSIX locks SQLite takes on Linux.
The lock file is created 0600: anyone able to open it could flock it and block the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
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
        real = database.resolve()  # a link to the database shares the real file's lock file
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None
        self._database_fd: int | None = None  # flock on the database file itself
        self.identity: FileIdentity | None = None
        self._known_identity: str | None = None  # the last daemon's line, kept until replaced

    def acquire(self) -> None:
        """Take the lock or raise DatabaseError naming the lock file and the PID holding it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = _open_lock_file(self.path)
        except _NotALockFileError as err:
            raise DatabaseError(
                f"database {self.database}: cannot lock {self.path}: {err}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = _holder_message(fd, self.path)
            os.close(fd)
            raise DatabaseError(f"database {self.database} is in use: {message}") from None
        self._fd = fd
        self._known_identity = _read_fields(fd).get(_IDENTITY_KEY)
        self._check_not_lost()
        self._write(pid=os.getpid())
        self._lock_database_file()

    def _lock_database_file(self) -> None:
        """Hold flock on the database file too (once it exists): a link to it is the same inode."""
        if self._database_fd is not None:
            return
        try:
            fd = os.open(self.database, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return  # not created yet: locked once the migration has made it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.release()
            raise DatabaseError(
                f"database {self.database} is in use: the database file itself is locked by "
                "another process (a tigerwatch daemon naming it through a link or another "
                "path?); only one may run per database"
            ) from None
        self._database_fd = fd

    def note_database_opened(self) -> None:
        """Record which file the database is, so that a later change of it can be noticed."""
        self._lock_database_file()
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
        if self._database_fd is not None:
            os.close(self._database_fd)
            self._database_fd = None
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


class _NotALockFileError(Exception):
    """The lock file's name holds something else: a link, a folder, a FIFO."""


def _open_lock_file(path: Path) -> int:
    """Open (or create, 0600) the lock file; _NotALockFileError for a link or a non-regular file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _NotALockFileError("it is a symbolic link") from None
        if err.errno == errno.EISDIR:
            raise _NotALockFileError("it is not a regular file (a folder)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # a FIFO opens (O_NONBLOCK) but is no lock file
        os.close(fd)
        raise _NotALockFileError("it is not a regular file")
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o600)  # a file an older version made 0644
    return fd


def _holder_message(fd: int, path: Path) -> str:
    """Who holds the lock: the daemon whose PID the file names, or a process that is not it."""
    named = _read_pid(fd)
    holders = _flock_holders(fd)
    if holders is None or named in holders:
        return (
            f"{path} is locked by PID {named}, another tigerwatch daemon; "
            "only one may run per database"
        )
    held_by = f"; PID {', '.join(sorted(holders))} holds it" if holders else ""
    return (
        f"{path} is locked by another process (the file names PID {named}, which does not "
        f"hold the lock{held_by}); a tigerwatch daemon cannot start while it is held"
    )


def _flock_holders(fd: int) -> set[str] | None:
    """PIDs holding a flock on the file of `fd`, from /proc/locks; None where unreadable."""
    info = os.fstat(fd)
    file_id = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    holders = set()
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF"; waiters have "->" after the id.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            holders.add(fields[4])
    return holders


def _read_fields(fd: int) -> dict[str, str]:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = os.pread(fd, 4096, 0).decode()
        return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    return {}


def _read_pid(fd: int) -> str:
    # The holder writes its PID right after locking: an empty file is a daemon starting.
    return _read_fields(fd).get("pid", "unknown (starting)")
