"""The database's instance lock: one holder at a time, never stale, and a lost file noticed."""

from __future__ import annotations

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
