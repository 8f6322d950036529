"""Transactions on one engine: IMMEDIATE writes, deferred reads, SQLite trouble as one error."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from daemon.storage.database import deferred, session_factory


class StoreUnavailable(Exception):  # noqa: N818 (the name the callers read: not an error of theirs)
    """The database cannot be reached right now (locked, busy, I/O error); nothing was committed.

    The callers' answer is always the same: keep the work where it is and try again later.
    """


class Transactions:
    """The base of the stores: each method opens one short transaction of its own."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Writes begin IMMEDIATE (take the write lock at once); reads must not, or a status
        # query would queue behind the daemon's commits.
        self._sessions: sessionmaker[Session] = session_factory(engine)
        self._reads: sessionmaker[Session] = session_factory(deferred(engine))

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """One IMMEDIATE transaction, committed on success; SQLite trouble is StoreUnavailable."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as err:
            raise StoreUnavailable(str(err.orig or err)) from err

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with self._reads() as session:
                yield session
        except OperationalError as err:
            raise StoreUnavailable(str(err.orig or err)) from err
