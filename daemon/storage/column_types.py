"""Column types of the schema: enums as text, aware UTC times, any file name, printable text."""

from __future__ import annotations

import enum
import os
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, Dialect, String, Text, TypeDecorator

E = TypeVar("E", bound=enum.StrEnum)


class StrEnumType(TypeDecorator[E]):
    """Stores a StrEnum as its plain string value and gives the enum member back."""

    impl = String(16)
    cache_ok = True

    def __init__(self, enum_class: type[E]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        # Converting here rejects an unknown value before it reaches the CHECK constraint.
        return None if value is None else self.enum_class(value).value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetime in Python, naive UTC in the database; naive input is refused."""

    impl = DateTime()
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be aware (use utcnow())")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class FsPath(TypeDecorator[str]):
    """A file-system path: text when it is valid UTF-8, else its exact bytes as a BLOB.

    Names on a station's disks need not be UTF-8 (a Latin-1 camera, a cp1251 FTP client).
    Python hands them over as str with surrogate escapes, which SQLite text cannot hold; the
    BLOB keeps the bytes, so the file can still be found and moved. Read back as the same str.
    """

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | bytes | None:
        if value is None or _is_utf8(value):
            return value
        return os.fsencode(value)

    def process_result_value(self, value: Any | None, dialect: Dialect) -> str | None:
        return os.fsdecode(value) if isinstance(value, bytes) else value


class Message(TypeDecorator[str]):
    """Human-readable text that may quote an undecodable file name: stored with the bad bytes
    written as escapes ("caf\\xe9.jpg"), since SQLite text must be valid UTF-8."""

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else printable(value)


def printable(text: str) -> str:
    """`text` as valid UTF-8: undecodable bytes of file names written as "\\xNN" escapes."""
    if _is_utf8(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
