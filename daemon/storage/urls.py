"""Database URLs: anchoring a SQLite file at the configuration's folder, showing, locating."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def anchored_url(value: str, base: Path | None) -> str:
    """Anchor a relative SQLite file at `base`; other URLs pass unchanged.

    Raises ValueError when `value` is no database URL at all.
    """
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("is not a database URL (expected e.g. sqlite:///tigerwatch.db)") from None
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or _sqlite_special(database):
        return value
    path = Path(database).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return url.set(database=os.path.normpath(path)).render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """The URL as it may appear in a message: the password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases, memory and URI filenames."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or _sqlite_special(database):
        return None
    return Path(database)


def _sqlite_special(database: str) -> bool:
    """In-memory databases and SQLite URI filenames are not plain file paths."""
    return database == ":memory:" or database.startswith("file:")
