"""The database's instance lock: one holder at a time, never stale, and a lost file noticed."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path

import pytest

from daemon.storage.database import DatabaseError
from daemon.storage.instance import InstanceLock, lock_database


def _url(database: Path) -> str:
    return f"sqlite:///{database}"


def test_one_holder_at_a_time_and_released_on_release(tmp_path: Path) -> None:
    database = tmp_path / "tigerwatch.db"
    first = lock_database(_url(database))
    assert first is not None
    with pytest.raises(DatabaseError, match=r"tigerwatch\.db\.lock is locked by PID \d+"):
        lock_database(_url(database))
    first.release()
    second = lock_database(_url(database))
    assert second is not None
    second.release()
    assert (tmp_path / "tigerwatch.db.lock").exists()


def test_a_database_lost_after_use_is_refused_until_recreated(tmp_path: Path) -> None:
    database = tmp_path / "tigerwatch.db"
    sqlite3.connect(database).close()
    lock = InstanceLock(database)
    lock.acquire()
    lock.note_database_opened()
    assert lock.database_changed() is None
    database.unlink()
    assert lock.database_changed() == "was deleted"
    lock.release()
    with pytest.raises(DatabaseError, match=r"is missing, but .* shows that a daemon used it"):
        lock_database(_url(database))
    sqlite3.connect(database).close()  # what `tigerwatch db upgrade` (or a restore) does
    again = lock_database(_url(database))
    assert again is not None
    again.release()


def test_a_first_start_without_a_database_is_allowed(tmp_path: Path) -> None:
    lock = lock_database(_url(tmp_path / "new" / "tigerwatch.db"))
    assert lock is not None
    lock.release()


def test_a_database_that_is_no_file_takes_no_lock() -> None:
    assert lock_database("sqlite:///:memory:") is None


@pytest.mark.parametrize("kind", ["hard link", "symbolic link"])
def test_a_link_to_a_locked_database_is_refused(tmp_path: Path, kind: str) -> None:
    database = tmp_path / "tigerwatch.db"
    sqlite3.connect(database).close()
    link = tmp_path / "elsewhere" / "tw.db"
    link.parent.mkdir()
    if kind == "hard link":
        link.hardlink_to(database)
    else:
        link.symlink_to(database)
    first = lock_database(_url(database))
    assert first is not None
    try:
        with pytest.raises(DatabaseError) as refused:
            lock_database(_url(link))
    finally:
        first.release()
    print(f"\n[{kind}] second lock refused: {refused.value}")
    assert "is in use" in str(refused.value)


def test_the_lock_file_is_private_to_its_owner(tmp_path: Path) -> None:
    database = tmp_path / "tigerwatch.db"
    old = tmp_path / "old.db"
    (tmp_path / "old.db.lock").write_text("pid 1\n")
    (tmp_path / "old.db.lock").chmod(0o644)  # as an older version made it
    modes = {}
    for path in (database, old):
        lock = lock_database(_url(path))
        assert lock is not None
        modes[path.name] = oct(lock.path.stat().st_mode & 0o777)
        lock.release()
    print(f"\nlock file modes: {modes}")
    assert modes == {"tigerwatch.db": "0o600", "old.db": "0o600"}


def test_a_holder_that_is_not_the_named_daemon_is_called_another_process(tmp_path: Path) -> None:
    database = tmp_path / "tigerwatch.db"
    lock_file = tmp_path / "tigerwatch.db.lock"
    lock_file.write_text("pid 999999999\n")  # a daemon long gone
    with lock_file.open("rb") as reader:  # any account able to read the file could do this
        fcntl.flock(reader, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DatabaseError) as refused:
            lock_database(_url(database))
    print(f"\nrefusal: {refused.value}")
    assert "locked by another process (the file names PID 999999999" in str(refused.value)
    assert f"PID {os.getpid()} holds it" in str(refused.value)


@pytest.mark.parametrize("kind", ["symbolic link", "FIFO"])
def test_a_lock_file_that_is_no_regular_file_is_named_so(tmp_path: Path, kind: str) -> None:
    database = tmp_path / "tigerwatch.db"
    lock_file = tmp_path / "tigerwatch.db.lock"
    if kind == "FIFO":
        os.mkfifo(lock_file)
        expected = "it is not a regular file"
    else:
        (tmp_path / "elsewhere.lock").write_text("pid 1\n")
        lock_file.symlink_to(tmp_path / "elsewhere.lock")
        expected = "it is a symbolic link"
    with pytest.raises(DatabaseError) as refused:
        lock_database(_url(database))
    print(f"\n[{kind}] {refused.value}")
    assert str(refused.value).endswith(f"cannot lock {lock_file}: {expected}")
