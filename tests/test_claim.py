"""Unit tests for daemon/beneath.py and daemon/delivery/claim.py: walking and claiming."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.beneath import FolderMissingError, UnsafePathError, folder_beneath
from daemon.delivery.claim import (
    claim,
    claim_name,
    claim_tag,
    give_back,
    leftover_claims,
    original_name,
    unclaim,
)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox" / "cam" / "day").mkdir(parents=True)
    return tmp_path / "inbox"


def test_walk_opens_the_real_folder(inbox: Path) -> None:
    (inbox / "cam" / "day" / "x.jpg").write_bytes(b"x")
    with folder_beneath(inbox / "cam" / "day" / "x.jpg", [inbox]) as folder:
        assert [entry.name for entry in os.scandir(folder)] == ["x.jpg"]


@pytest.mark.parametrize("depth", ["cam", "day"])
def test_walk_refuses_a_symlinked_folder_at_any_depth(
    inbox: Path, tmp_path: Path, depth: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "day").mkdir(parents=True)
    link = inbox / "cam" if depth == "cam" else inbox / "cam" / "day"
    link.rename(link.with_name(link.name + "-real"))
    link.symlink_to(outside / "day" if depth == "day" else outside, target_is_directory=True)
    with (
        pytest.raises(UnsafePathError, match="symbolic link"),
        folder_beneath(inbox / "cam" / "day" / "x.jpg", [inbox]),
    ):
        pass


def test_walk_refuses_paths_outside_every_inbox(inbox: Path, tmp_path: Path) -> None:
    with (
        pytest.raises(UnsafePathError, match="not inside any inbox"),
        folder_beneath(tmp_path / "elsewhere" / "x.jpg", [inbox]),
    ):
        pass


def test_walk_reports_a_missing_folder(inbox: Path) -> None:
    with pytest.raises(FolderMissingError), folder_beneath(inbox / "gone" / "x.jpg", [inbox]):
        pass


def test_claim_names_round_trip() -> None:
    name = claim_name("i12", "IMG_0001.JPG")
    assert name.startswith(".")
    assert claim_tag(name) == "i12"
    assert original_name(name) == "IMG_0001.JPG"
    assert len(os.fsencode(claim_name("d3", "я" * 200 + ".JPG"))) <= 255
    assert claim_tag("IMG_0001.JPG") is None


def test_claim_moves_the_name_aside_and_a_newer_upload_stays(inbox: Path) -> None:
    path = inbox / "cam" / "IMG_0001.JPG"
    path.write_bytes(b"first")
    with folder_beneath(path, [inbox]) as folder:
        claimed = claim(folder, path.name, "i1", shown=str(path))
        assert claimed is not None
        path.write_bytes(b"re-upload")  # published at the name while the claim is held
        assert claim(folder, path.name, "i1", shown=str(path)) == claimed  # found again
        unclaim(claimed, path.name)  # the name is taken: the claim is kept, nothing overwritten
        assert path.read_bytes() == b"re-upload"
        assert give_back(claimed, path.name) == "IMG_0001-1.JPG"
    assert (inbox / "cam" / "IMG_0001-1.JPG").read_bytes() == b"first"
    assert path.read_bytes() == b"re-upload"


def test_claim_of_nothing_is_none(inbox: Path) -> None:
    with folder_beneath(inbox / "cam" / "x.jpg", [inbox]) as folder:
        assert claim(folder, "x.jpg", "i1", shown="x.jpg") is None


def test_leftover_claims_are_found_below_the_inbox_never_through_a_link(
    inbox: Path, tmp_path: Path
) -> None:
    mine = inbox / "cam" / "day" / claim_name("i1", "a.jpg")
    mine.write_bytes(b"a")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / claim_name("i2", "b.jpg")).write_bytes(b"b")
    (inbox / "linked").symlink_to(outside, target_is_directory=True)
    found = [folder / name for _fd, name, folder in leftover_claims([inbox])]
    assert found == [mine]
