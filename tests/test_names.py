"""Tests for daemon.intake.names: temp and junk names are ignored, extensions match any case."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.intake.names import BUILTIN_IGNORE_PATTERNS, NameFilter

# Every temp or junk name listed in FIELD-NOTES, written the way the tools write them.
TEMP_AND_JUNK_NAMES = [
    ".pureftpd-upload.5f3a2b1c.IMG_0001.JPG",
    ".in.IMG_0001.JPG.",
    "IMG_0001.JPG.filepart",
    ".syncthing.IMG_0001.JPG.tmp",
    "IMG_0001.JPG.a1b2c3d4.partial",
    ".IMG_0001.JPG.Xy12Ab",
    "IMG_0001.JPG.part",
    "IMG_0001.JPG.crdownload",
    "IMG_0001.JPG.tmp",
    "IMG_0001.JPG~",
    ".DS_Store",
    "._IMG_0001.JPG",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    ".Trashes",
    "__MACOSX",
    "$RECYCLE.BIN",
    "System Volume Information",
]


@pytest.fixture
def name_filter() -> NameFilter:
    return NameFilter([".jpg", ".jpeg", ".webp"])


@pytest.mark.parametrize("name", TEMP_AND_JUNK_NAMES)
def test_field_notes_temp_and_junk_names_are_ignored(name_filter: NameFilter, name: str) -> None:
    assert name_filter.is_ignored_name(name)
    assert not name_filter.accepts_file(Path("/inbox") / name)


@pytest.mark.parametrize("name", ["THUMBS.DB", "@EADIR", "__macosx", "img_0001.jpg.PART", "X.TMP"])
def test_ignore_patterns_are_case_insensitive(name_filter: NameFilter, name: str) -> None:
    assert name_filter.is_ignored_name(name)


def test_every_hidden_name_is_ignored(name_filter: NameFilter) -> None:
    assert name_filter.is_ignored_name(".anything-at-all.jpg")
    assert not name_filter.accepts_file(Path(".IMG_0001.JPG"))


def test_builtin_patterns_cover_the_hidden_rule() -> None:
    assert ".*" in BUILTIN_IGNORE_PATTERNS


@pytest.mark.parametrize(
    "name", ["IMG_0001.JPG", "img_0001.jpg", "RCNX0001.JpG", "frame.jpeg", "tiger.WEBP"]
)
def test_accepted_extensions_match_in_any_case(name_filter: NameFilter, name: str) -> None:
    assert not name_filter.is_ignored_name(name)
    assert name_filter.accepts_file(Path("/inbox/DCIM/100RECNX") / name)


@pytest.mark.parametrize("name", ["notes.txt", "IMG_0001.PNG", "jpg", "IMG_0001.jpg.bak"])
def test_other_extensions_are_rejected(name_filter: NameFilter, name: str) -> None:
    assert not name_filter.accepts_file(Path(name))


def test_ordinary_names_are_not_ignored(name_filter: NameFilter) -> None:
    for name in ["DCIM", "100RECNX", "IMG_0001.JPG", "notes.txt", "tmp", "part"]:
        assert not name_filter.is_ignored_name(name), name


def test_extensions_may_be_given_without_dot_and_in_upper_case() -> None:
    name_filter = NameFilter(["JPG", " .WebP "])
    assert name_filter.extensions == (".jpg", ".webp")
    assert name_filter.accepts_file(Path("a.jpg"))
    assert name_filter.accepts_file(Path("a.webp"))
    assert not name_filter.accepts_file(Path("a.jpeg"))


def test_extra_patterns_are_ignored_case_insensitively() -> None:
    name_filter = NameFilter([".jpg"], extra_patterns=["*_thumb.jpg", "Preview"])
    assert name_filter.is_ignored_name("IMG_0001_THUMB.JPG")
    assert name_filter.is_ignored_name("preview")
    assert not name_filter.accepts_file(Path("IMG_0001_thumb.jpg"))
    assert name_filter.accepts_file(Path("IMG_0001.jpg"))


def test_extra_patterns_do_not_leak_between_filters() -> None:
    NameFilter([".jpg"], extra_patterns=["IMG_*"])
    assert NameFilter([".jpg"]).accepts_file(Path("IMG_0001.jpg"))


@pytest.mark.parametrize("extensions", [[], [""], ["."]])
def test_missing_or_empty_extensions_are_refused(extensions: list[str]) -> None:
    with pytest.raises(ValueError, match="extension"):
        NameFilter(extensions)
