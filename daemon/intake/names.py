"""Decide from a name alone whether a path is a candidate image or temp/junk to leave alone."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import Path

# Every hidden name (leading ".") is ignored. Uploaders write their in-progress files under hidden
# names (pure-ftpd ".pureftpd-upload.*", ProFTPD ".in.NAME.", rsync ".NAME.XXXXXX", Syncthing
# ".syncthing.NAME.tmp"), macOS leaves ".DS_Store", "._NAME" and ".Trashes", and no camera trap
# names a frame with a leading dot. One rule covers temp names we have not met yet, such as rsync's
# random suffixes, that no finite pattern list could. The explicit hidden patterns stay listed so
# the list still documents (and still works) if the ".*" rule is ever dropped.
BUILTIN_IGNORE_PATTERNS: tuple[str, ...] = (
    ".*",
    # The daemon's own private names: claimed inbox files and partial copies.
    ".tigerwatch-*",
    # Upload/download temp names from FIELD-NOTES.
    ".pureftpd-upload.*",
    ".in.*",
    ".syncthing.*.tmp",
    "*.filepart",
    "*.partial",
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*~",
    # Operating-system junk, files and folders.
    ".DS_Store",
    "._*",
    ".Trashes",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    "__MACOSX",
    "$RECYCLE.BIN",
    "System Volume Information",
)


def _compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive regex for all globs: a scan checks every name in the inbox."""
    translated = [fnmatch.translate(pattern.casefold()) for pattern in patterns]
    return re.compile("|".join(f"(?:{regex})" for regex in translated))


def _normalise_extension(extension: str) -> str:
    cleaned = extension.strip().casefold()
    if not cleaned or cleaned == ".":
        raise ValueError(f"empty file extension {extension!r}")
    return cleaned if cleaned.startswith(".") else f".{cleaned}"


class NameFilter:
    """Name rules shared by the watcher and the scanner, so both see the same candidates."""

    def __init__(self, extensions: Iterable[str], extra_patterns: Iterable[str] = ()) -> None:
        self._extensions = tuple(sorted({_normalise_extension(ext) for ext in extensions}))
        if not self._extensions:
            raise ValueError("NameFilter needs at least one accepted file extension")
        self._ignored = _compile_patterns((*BUILTIN_IGNORE_PATTERNS, *extra_patterns))

    @property
    def extensions(self) -> tuple[str, ...]:
        """Accepted extensions, lower case with their leading dot."""
        return self._extensions

    def is_ignored_name(self, name: str) -> bool:
        """True for temp or junk names (files or folders), compared case-insensitively."""
        return self._ignored.fullmatch(name.casefold()) is not None

    def accepts_file(self, path: Path) -> bool:
        """True when the final name is not temp/junk and ends with an accepted extension.

        Only the name is looked at (no I/O); callers that walk a tree skip ignored folders
        themselves.
        """
        name = path.name
        return not self.is_ignored_name(name) and name.casefold().endswith(self._extensions)
