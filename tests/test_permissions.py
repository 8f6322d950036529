"""Files the daemon creates get the configured group and mode."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from daemon.config import ConfigError, parse_config
from daemon.delivery.permissions import Ownership


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _other_group() -> int:
    """A group this process may give files to: any group as root, else our own."""
    if os.geteuid() == 0:
        return next(g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getegid())
    return os.getegid()


def test_directory_mode_adds_search_where_read_is_allowed() -> None:
    assert Ownership(file_mode=0o640).directory_mode == 0o750
    assert Ownership(file_mode=0o644).directory_mode == 0o755
    assert Ownership(file_mode=0o600).directory_mode == 0o700
    assert Ownership().directory_mode is None


def test_apply_sets_file_and_folders_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / "review"
    image = root / "2026-11-25" / "IMG_0001.JPG"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"jpeg")
    image.chmod(0o600)
    group = _other_group()
    root_before = (root.stat().st_mode, root.stat().st_gid)

    Ownership(group_id=group, file_mode=0o640).apply(image, up_to=root)

    assert _mode(image) == 0o640
    assert _mode(image.parent) == 0o750
    assert image.stat().st_gid == group
    assert image.parent.stat().st_gid == group
    assert (root.stat().st_mode, root.stat().st_gid) == root_before  # the root itself: untouched


def test_apply_leaves_a_symlink_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "outside.jpg"
    target.write_bytes(b"x")
    target.chmod(0o604)
    link = tmp_path / "q" / "link.jpg"
    link.parent.mkdir()
    link.symlink_to(target)

    Ownership(file_mode=0o640).apply(link, up_to=tmp_path / "q")

    assert _mode(target) == 0o604


def test_nothing_configured_changes_nothing(tmp_path: Path) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(b"x")
    image.chmod(0o604)
    Ownership().apply(image, up_to=tmp_path)
    assert _mode(image) == 0o604


def _files_config(tmp_path: Path, files: dict[str, object]) -> dict[str, object]:
    return {
        "paths": {"inbox": "in", "review": "rv", "archive": "ar", "quarantine": "q"},
        "files": files,
    }


def test_config_reads_group_names_and_octal_modes(tmp_path: Path) -> None:
    name = grp.getgrgid(os.getegid()).gr_name
    config = parse_config(
        _files_config(tmp_path, {"group": name, "mode": "0640"}), source=tmp_path / "t.yaml"
    )
    assert config.files.group == os.getegid()
    assert config.files.mode == 0o640


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"group": "no-such-group-xyz"}, "files.group: no group named 'no-such-group-xyz'"),
        ({"mode": "rw-r-----"}, "files.mode: must be an octal mode"),
        ({"mode": "0040"}, "files.mode: '0040' must give the owner read and write"),
        ({"mode": "01777"}, "files.mode: must be between 0000 and 0777"),
    ],
)
def test_config_rejects_bad_files_settings(
    tmp_path: Path, files: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_files_config(tmp_path, files), source=tmp_path / "t.yaml")
    assert message in str(caught.value)


def test_the_setgid_bit_of_a_dated_folder_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "review"
    dated = root / "2026-12-02"
    dated.mkdir(parents=True)
    dated.chmod(0o2755)  # made in a setgid root, as the README sets them up
    frame = dated / "IMG_0001.JPG"
    frame.write_bytes(b"frame")
    Ownership(file_mode=0o640).apply(frame, up_to=root)
    assert stat.S_IMODE(dated.stat().st_mode) == 0o2750
    assert stat.S_IMODE(frame.stat().st_mode) == 0o640
