"""Tests for daemon.intake.scanner: which paths a full inbox walk yields, on real folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.intake.names import NameFilter
from daemon.intake.scanner import scan_inbox


@pytest.fixture
def name_filter() -> NameFilter:
    return NameFilter([".jpg", ".jpeg"])


def touch(path: Path, data: bytes = b"\xff\xd8\xff") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_nested_camera_tree_is_walked_in_name_order(
    tmp_path: Path, name_filter: NameFilter
) -> None:
    inbox = tmp_path / "inbox"
    expected = [
        touch(inbox / "a_loose.jpg"),
        touch(inbox / "z_loose.JPEG"),
        touch(inbox / "DCIM" / "100RECNX" / "RCNX0001.JPG"),
        touch(inbox / "DCIM" / "100RECNX" / "RCNX0002.JPG"),
        touch(inbox / "DCIM" / "101RECNX" / "RCNX0101.JPG"),
    ]
    touch(inbox / "DCIM" / "100RECNX" / "notes.txt")
    touch(inbox / "DCIM" / "100RECNX" / ".pureftpd-upload.1a2b3c")
    touch(inbox / "DCIM" / "100RECNX" / "RCNX0003.JPG.filepart")
    (inbox / "DCIM" / "102EMPTY").mkdir()

    assert list(scan_inbox(inbox, name_filter)) == expected


def test_symlinked_folder_is_not_followed(tmp_path: Path, name_filter: NameFilter) -> None:
    outside = tmp_path / "outside"
    touch(outside / "secret.jpg")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "linked_folder").symlink_to(outside, target_is_directory=True)

    assert list(scan_inbox(inbox, name_filter)) == []


def test_symlinks_with_accepted_names_are_yielded_not_followed(
    tmp_path: Path, name_filter: NameFilter
) -> None:
    real = touch(tmp_path / "outside" / "real.jpg")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "link_to_file.jpg").symlink_to(real)
    (inbox / "link_to_folder.jpg").symlink_to(real.parent, target_is_directory=True)
    (inbox / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")

    assert list(scan_inbox(inbox, name_filter)) == [
        inbox / "dangling.jpg",
        inbox / "link_to_file.jpg",
        inbox / "link_to_folder.jpg",
    ]


def test_fifo_with_accepted_name_is_yielded_for_quarantine(
    tmp_path: Path, name_filter: NameFilter
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.mkfifo(inbox / "pipe.jpg")

    assert list(scan_inbox(inbox, name_filter)) == [inbox / "pipe.jpg"]


def test_ignored_folders_are_skipped(tmp_path: Path, name_filter: NameFilter) -> None:
    inbox = tmp_path / "inbox"
    kept = touch(inbox / "DCIM" / "IMG_0001.JPG")
    touch(inbox / "@eaDir" / "IMG_0001.JPG" / "SYNOPHOTO_THUMB_XL.jpg")
    touch(inbox / "DCIM" / "@eaDir" / "SYNOPHOTO_THUMB_M.jpg")
    touch(inbox / "__MACOSX" / "DCIM" / "IMG_0001.JPG")
    touch(inbox / ".Trashes" / "501" / "IMG_0009.JPG")

    assert list(scan_inbox(inbox, name_filter)) == [kept]


def test_extra_patterns_skip_folders_too(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    kept = touch(inbox / "keep" / "a.jpg")
    touch(inbox / "previews" / "b.jpg")

    assert list(scan_inbox(inbox, NameFilter([".jpg"], ["previews"]))) == [kept]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_folder_is_logged_and_skipped(
    tmp_path: Path, name_filter: NameFilter, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    kept = touch(inbox / "b_open" / "IMG_0002.JPG")
    locked = inbox / "a_locked"
    touch(locked / "IMG_0001.JPG")
    locked.chmod(0)
    try:
        with caplog.at_level(logging.WARNING, logger="daemon.intake.scanner"):
            found = list(scan_inbox(inbox, name_filter))
    finally:
        locked.chmod(0o755)

    assert found == [kept]
    assert str(locked) in caplog.text


def test_folder_that_fails_to_open_is_logged_and_skipped(
    tmp_path: Path,
    name_filter: NameFilter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same as the chmod case, but runs as root too: the denial comes from a patched os.open
    (each folder is opened by name relative to the one above it)."""
    inbox = tmp_path / "inbox"
    kept = touch(inbox / "b_open" / "IMG_0002.JPG")
    locked = inbox / "a_locked"
    touch(locked / "IMG_0001.JPG")
    real_open = os.open

    def open_denying_locked(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsdecode(path) == locked.name and kwargs.get("dir_fd") is not None:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_denying_locked)
    with caplog.at_level(logging.WARNING, logger="daemon.intake.scanner"):
        found = list(scan_inbox(inbox, name_filter))

    assert found == [kept]
    assert str(locked) in caplog.text


def test_missing_inbox_yields_nothing_and_warns(
    tmp_path: Path, name_filter: NameFilter, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "not_mounted"
    with caplog.at_level(logging.WARNING, logger="daemon.intake.scanner"):
        assert list(scan_inbox(missing, name_filter)) == []
    assert str(missing) in caplog.text
