"""The one classification of move errors: an entry's own trouble, or a whole destination."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from daemon.delivery.fileops import move_durably
from daemon.delivery.move_errors import Scope, classify_move_error


def _error_of_move(source: Path, destination: Path) -> OSError:
    with pytest.raises(OSError) as caught:
        move_durably(source, destination)
    return caught.value


def test_a_fifo_is_the_entrys_own_trouble(tmp_path: Path) -> None:
    source, destination = tmp_path / "pipe.jpg", tmp_path / "out" / "pipe.jpg"
    os.mkfifo(source)
    fault = classify_move_error(_error_of_move(source, destination), source, destination)
    assert (fault.scope, fault.at_source) == (Scope.ENTRY, True)
    assert "not a regular file" in fault.reason


def test_a_vanished_source_is_the_entrys_own_trouble(tmp_path: Path) -> None:
    source, destination = tmp_path / "gone.jpg", tmp_path / "out" / "gone.jpg"
    fault = classify_move_error(_error_of_move(source, destination), source, destination)
    assert (fault.scope, fault.at_source) == (Scope.ENTRY, True)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_or_read_only_destination_pauses_the_flow(tmp_path: Path, code: int) -> None:
    source, destination = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    source.write_bytes(b"x")
    partial = destination.parent / ".tigerwatch-partial-0123456789abcdef-a.jpg"
    err = OSError(code, os.strerror(code), str(partial))
    assert classify_move_error(err, source, destination).scope is Scope.DESTINATION


def test_a_refused_unlink_in_the_inbox_is_the_entrys_own_trouble(tmp_path: Path) -> None:
    source, destination = tmp_path / "ftp" / "a.jpg", tmp_path / "out" / "a.jpg"
    err = OSError(errno.EACCES, "Permission denied", str(source))  # as unlink(source) raises
    fault = classify_move_error(err, source, destination)
    assert (fault.scope, fault.at_source) == (Scope.ENTRY, True)


def test_a_refused_link_looks_at_the_inbox_folder_to_tell_the_side(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    source, destination = tmp_path / "in" / "a.jpg", tmp_path / "out" / "a.jpg"
    err = OSError(errno.EACCES, "Permission denied", str(source), None, str(destination))
    # The inbox folder lets this process remove entries: the destination refused.
    assert classify_move_error(err, source, destination).scope is Scope.DESTINATION


def test_a_copy_the_destination_does_not_keep_intact_pauses_the_flow(tmp_path: Path) -> None:
    # A destination disk that corrupts copies would do it to the next file too.
    source, destination = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    err = OSError(errno.EIO, "copy's SHA-256 differs from the source", str(destination))
    fault = classify_move_error(err, source, destination)
    assert (fault.scope, fault.at_source) == (Scope.DESTINATION, False)


def test_a_name_the_destination_cannot_hold_is_the_entrys(tmp_path: Path) -> None:
    source, destination = tmp_path / "a.jpg", tmp_path / "out" / ("x" * 300 + ".jpg")
    err = OSError(errno.ENAMETOOLONG, "File name too long", str(destination))
    fault = classify_move_error(err, source, destination)
    assert (fault.scope, fault.at_source) == (Scope.ENTRY, False)


def test_a_dated_folder_that_is_a_plain_file_pauses_the_flow(tmp_path: Path) -> None:
    # Not the frame's fault: rerouting it to quarantine would hide a positive from staff.
    source, destination = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    source.write_bytes(b"x")
    (tmp_path / "out").write_bytes(b"a file where the dated folder should be")
    fault = classify_move_error(_error_of_move(source, destination), source, destination)
    assert (fault.scope, fault.at_source) == (Scope.DESTINATION, False)


def test_a_refused_claim_rename_inside_the_inbox_folder_is_the_entrys(tmp_path: Path) -> None:
    # The claim renames within the inbox folder, both names relative to its descriptor: an
    # immutable file (chattr +i) or another user's file in a sticky folder refuses it.
    source, destination = tmp_path / "a.jpg", tmp_path / "out" / "a.jpg"
    source.write_bytes(b"x")
    err = OSError(
        errno.EPERM, "Operation not permitted", "a.jpg", None, ".tigerwatch-claim-i1-a.jpg"
    )
    fault = classify_move_error(err, source, destination)
    assert (fault.scope, fault.at_source) == (Scope.ENTRY, True)
