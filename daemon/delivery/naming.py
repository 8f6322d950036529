"""Destination names: one harmless path component, free names, private temp names."""

from __future__ import annotations

import errno
import os
import secrets
import unicodedata
from collections.abc import Collection
from pathlib import Path

PARTIAL_PREFIX = ".tigerwatch-partial-"
_TOKEN_CHARS = 16  # secrets.token_hex(8)
_NAME_MAX_BYTES = 255  # NAME_MAX on ext4, xfs, btrfs, tmpfs, vfat (in UTF-16 units there)
_PARTIAL_NAME_BYTES = _NAME_MAX_BYTES - len(PARTIAL_PREFIX) - _TOKEN_CHARS - 1
_SAFE_NAME_BYTES = 200  # leaves room for "-N" collision suffixes and ".txt" sidecars
_MAX_EXTENSION_CHARS = 16
_MAX_UNIQUE_ATTEMPTS = 100_000
_FALLBACK_STEM = "unnamed"

# Characters vfat/exfat/SMB refuse in names; replacing them keeps USB and network targets usable.
_NON_PORTABLE_CHARS = frozenset('\\:*?"<>|')
# Bidirectional overrides can disguise an extension ("photo\u202egpj.exe").
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Cc: control chars (NUL, newline, tab, DEL, C1); Cs: lone surrogates from os.fsdecode;
# Zl/Zp: Unicode line and paragraph separators, which break log lines like a newline.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def safe_filename(name: str) -> str:
    """Return a single, harmless path component derived from ``name``.

    Keeps Unicode letters and spaces; the extension is the last ".suffix" when it is short and
    alphanumeric (so ".jpg" alone becomes "unnamed.jpg").
    """
    component = name.rstrip("/").rsplit("/", 1)[-1]
    cleaned = "".join("_" if _is_unsafe_char(char) else char for char in component)
    cleaned = cleaned.rstrip(" .")
    stem, extension = split_extension(cleaned)
    stem = stem.lstrip(" .-")
    stem = _truncate_utf8(stem, _SAFE_NAME_BYTES - len(extension.encode())).rstrip(" .")
    return (stem or _FALLBACK_STEM) + extension


def _is_unsafe_char(char: str) -> bool:
    if char in _NON_PORTABLE_CHARS or char in _BIDI_CONTROLS:
        return True
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def split_extension(name: str) -> tuple[str, str]:
    """Split off the last ".suffix" when it looks like a real extension (".JPG", ".webp")."""
    dot = name.rfind(".")
    suffix = name[dot + 1 :]
    if dot < 0 or not suffix or len(suffix) > _MAX_EXTENSION_CHARS or not suffix.isalnum():
        return name, ""
    return name[:dot], name[dot:]


def _truncate_utf8(text: str, max_bytes: int) -> str:
    # "ignore" drops a multi-byte character cut in half at the end.
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", "ignore")


def unique_destination(
    directory: Path,
    name: str,
    *,
    reserved: Collection[Path] = frozenset(),
    companion_suffix: str | None = None,
) -> Path:
    """Return ``directory / name``, or the first free "stem-N.ext" when that is taken.

    `reserved` holds paths promised to other files that are not on disk yet (one batch may
    hold two IMG_0001.JPG). With `companion_suffix` (".txt" for a quarantine note) the name is
    free only when "<name><suffix>" is free too, so a note left behind by an earlier file is
    never taken for this file's note. A free name can be taken by someone else before it is
    used: move_durably never overwrites, so a caller that gets FileExistsError asks again.
    """
    stem, extension = split_extension(name)
    for number in range(_MAX_UNIQUE_ATTEMPTS):
        candidate = directory / (name if number == 0 else f"{stem}-{number}{extension}")
        if candidate in reserved or _path_taken(candidate):
            continue
        if companion_suffix and _path_taken(candidate.with_name(candidate.name + companion_suffix)):
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free name after many attempts", str(directory / name))


def _path_taken(path: Path) -> bool:
    # lstat, not exists(): a dangling symlink is a taken name.
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    return True


def partial_name(final_name: str) -> str:
    token = secrets.token_hex(_TOKEN_CHARS // 2)
    return f"{PARTIAL_PREFIX}{token}-{_partial_suffix(final_name)}"


def _partial_suffix(final_name: str) -> str:
    # Cut by bytes so the temp name fits NAME_MAX; fsdecode keeps a cut character reversible.
    return os.fsdecode(os.fsencode(final_name)[:_PARTIAL_NAME_BYTES])


def is_partial_of(entry_name: str, final_name: str) -> bool:
    if not entry_name.startswith(PARTIAL_PREFIX):
        return False
    rest = entry_name[len(PARTIAL_PREFIX) :]
    if len(rest) <= _TOKEN_CHARS or rest[_TOKEN_CHARS] != "-":
        return False
    return rest[_TOKEN_CHARS + 1 :] == _partial_suffix(final_name)
