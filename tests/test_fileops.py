"""Tests for daemon.delivery.fileops: safe names, durable moves, crash recovery and sidecars."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.delivery import fileops
from daemon.delivery.fileops import (
    PARTIAL_PREFIX,
    fsync_directory,
    move_durably,
    safe_filename,
    unique_destination,
    write_sidecar,
)
from daemon.delivery.settle import SettleOutcome, settle_move
from daemon.hashing import sha256_bytes, sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
OLD_MTIME_NS = 1_600_000_000_123_456_789
REAL_LINK = os.link


def make_image(path: Path, data: bytes = b"\xff\xd8\xff\xe0 fake jpeg \x00\x01" * 100) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o640)
    os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return data


def link_text(link: Path) -> str:
    # Not Path.readlink(): it normalises "a//./b", and the exact text is what is under test.
    return os.readlink(link)  # noqa: PTH115


def partial_files(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return [p for p in directory.iterdir() if p.name.startswith(PARTIAL_PREFIX)]


def link_raising(errno_for: Callable[[Path], int | None]) -> Callable[..., None]:
    """An os.link replacement that fails with errno_for(src), or links for real when None."""

    def fake_link(src: Any, dst: Any, **kwargs: Any) -> None:
        code = errno_for(Path(src))
        if code is not None:
            raise OSError(code, os.strerror(code), str(src))
        REAL_LINK(src, dst, **kwargs)

    return fake_link


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    directory = tmp_path / "inbox"
    directory.mkdir()
    return directory


@pytest.fixture
def force_cross_device(monkeypatch: pytest.MonkeyPatch, inbox: Path) -> None:
    """Make every link out of the inbox fail with EXDEV, as if the target were another disk."""
    monkeypatch.setattr(
        os, "link", link_raising(lambda src: errno.EXDEV if src.parent == inbox else None)
    )


@pytest.fixture
def other_device_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on a different filesystem (tmpfs /dev/shm), or skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is not a separate filesystem here")
    directory = Path(tempfile.mkdtemp(prefix="tigerwatch-test-", dir=shm))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- safe_filename ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("IMG_0001.JPG", "IMG_0001.JPG"),
        ("тигр 1.jpg", "тигр 1.jpg"),
        ("../../etc/passwd", "passwd"),
        ("DCIM/100MEDIA/", "100MEDIA"),
        ("-rf.jpg", "rf.jpg"),
        ("--help", "help"),
        (".hidden.jpg", "hidden.jpg"),
        ("a\nb.jpg", "a_b.jpg"),
        ("a\tb\x00c\x7f.jpg", "a_b_c_.jpg"),
        ("line\u2028sep.jpg", "line_sep.jpg"),
        ("photo\u202egpj.exe", "photo_gpj.exe"),
        ('cam:1 "a?".jpg', "cam_1 _a__.jpg"),
        ("photo.jpg. ", "photo.jpg"),
        ("-.jpg", "unnamed.jpg"),
        (".jpg", "unnamed.jpg"),
        ("", "unnamed"),
        (".", "unnamed"),
        ("..", "unnamed"),
        ("...", "unnamed"),
        ("/", "unnamed"),
        ("../..", "unnamed"),
    ],
)
def test_safe_filename_examples(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected


def test_safe_filename_replaces_undecodable_bytes() -> None:
    raw = os.fsdecode(b"caf\xe9.jpg")
    assert "\udce9" in raw  # surrogateescape, as os.listdir gives it

    name = safe_filename(raw)

    assert name == "caf_.jpg"
    assert name.encode("utf-8")  # would raise on a lone surrogate


@pytest.mark.parametrize("stem", ["a" * 300, "тигр" * 100, "🐅" * 80, "a" * 199 + "é" * 10])
def test_safe_filename_caps_long_names_keeping_extension(stem: str) -> None:
    name = safe_filename(stem + ".JPG")

    assert len(name.encode("utf-8")) <= 200
    assert name.endswith(".JPG")
    assert stem.startswith(name.removesuffix(".JPG"))


def test_safe_filename_caps_long_names_without_extension() -> None:
    name = safe_filename("x" * 500)

    assert name == "x" * 200


NASTY_NAMES = [
    "../../etc/passwd",
    "-rf.jpg",
    ".hidden.jpg",
    "a\nb.jpg",
    os.fsdecode(b"caf\xe9.jpg"),
    os.fsdecode(b"\xff\xfe"),
    "",
    ".",
    "..",
    " - .jpg",
    "тигр 1.jpg",
    "я" * 400 + ".jpeg",
    "\x00",
    "...---...",
    "x/../..",
]


@pytest.mark.parametrize("raw", NASTY_NAMES)
def test_safe_filename_result_is_one_creatable_plain_name(raw: str, tmp_path: Path) -> None:
    name = safe_filename(raw)

    assert name not in {"", ".", ".."}
    assert "/" not in name and "\x00" not in name
    assert not name.startswith((".", "-", " "))
    assert not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= 200
    created = tmp_path / name
    created.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert safe_filename(name) == name  # stable


# --- unique_destination ----------------------------------------------------------------------


def test_unique_destination_returns_name_when_free(tmp_path: Path) -> None:
    assert unique_destination(tmp_path, "IMG_1.JPG") == tmp_path / "IMG_1.JPG"


def test_unique_destination_counts_past_three_collisions(tmp_path: Path) -> None:
    for taken in ["IMG_1.JPG", "IMG_1-1.JPG", "IMG_1-2.JPG"]:
        (tmp_path / taken).write_bytes(b"taken")

    assert unique_destination(tmp_path, "IMG_1.JPG") == tmp_path / "IMG_1-3.JPG"


def test_unique_destination_treats_dangling_symlink_as_taken(tmp_path: Path) -> None:
    (tmp_path / "IMG_1.JPG").symlink_to(tmp_path / "nowhere")

    assert unique_destination(tmp_path, "IMG_1.JPG") == tmp_path / "IMG_1-1.JPG"


def test_unique_destination_without_extension(tmp_path: Path) -> None:
    (tmp_path / "frame").write_bytes(b"taken")

    assert unique_destination(tmp_path, "frame") == tmp_path / "frame-1"


# --- move_durably on one filesystem ----------------------------------------------------------


def test_move_within_filesystem(inbox: Path, tmp_path: Path) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "2024" / "IMG_0001.JPG"  # parents do not exist yet

    move_durably(source, destination)

    assert not source.exists()
    assert destination.read_bytes() == data
    assert destination.stat().st_mtime_ns == OLD_MTIME_NS
    assert destination.stat().st_mode & 0o777 == 0o640


def test_move_never_overwrites(inbox: Path, tmp_path: Path) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    make_image(destination, b"an earlier, different photo")

    with pytest.raises(FileExistsError) as caught:
        move_durably(source, destination)

    assert caught.value.filename == str(destination)
    assert source.read_bytes() == data
    assert destination.read_bytes() == b"an earlier, different photo"


def test_move_never_replaces_a_dangling_symlink(inbox: Path, tmp_path: Path) -> None:
    source = inbox / "IMG_0001.JPG"
    make_image(source)
    destination = tmp_path / "IMG_0001.JPG"
    destination.symlink_to(tmp_path / "nowhere")

    with pytest.raises(FileExistsError):
        move_durably(source, destination)

    assert destination.is_symlink()
    assert source.exists()


def test_move_refuses_a_directory(inbox: Path, tmp_path: Path) -> None:
    folder = inbox / "DCIM"
    folder.mkdir()

    with pytest.raises(IsADirectoryError):
        move_durably(folder, tmp_path / "review" / "DCIM")

    assert folder.is_dir()


def test_move_missing_source_raises_and_creates_nothing(inbox: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        move_durably(inbox / "gone.jpg", tmp_path / "review" / "gone.jpg")

    assert not (tmp_path / "review").exists()


def test_failed_source_unlink_undoes_the_destination(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    real_unlink = os.unlink

    # os.unlink: the source is removed by name relative to its folder (or by path), not Path.
    def unlink_refusing_source(path: Any, *, dir_fd: int | None = None) -> None:
        if Path(path) == source:
            raise PermissionError(errno.EACCES, "read-only inbox", str(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink_refusing_source)

    with pytest.raises(PermissionError):
        move_durably(source, destination)

    assert source.read_bytes() == data
    assert not destination.exists()


# --- move_durably when hard links are not supported ------------------------------------------


def test_move_falls_back_to_rename_without_hard_links(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", link_raising(lambda src: errno.EPERM))
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    inode = source.stat().st_ino
    destination = tmp_path / "archive" / "IMG_0001.JPG"

    move_durably(source, destination)

    assert not source.exists()
    assert destination.read_bytes() == data
    assert destination.stat().st_ino == inode  # renamed, not copied
    assert destination.stat().st_mtime_ns == OLD_MTIME_NS


def test_rename_fallback_still_refuses_to_overwrite(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "IMG_0001.JPG"

    def link_loses_race(src: Any, dst: Any, **kwargs: Any) -> None:
        destination.write_bytes(b"keep me")  # appears after move_durably's first check
        raise OSError(errno.EOPNOTSUPP, "no hard links here", str(src))

    monkeypatch.setattr(os, "link", link_loses_race)

    with pytest.raises(FileExistsError):
        move_durably(source, destination)

    assert destination.read_bytes() == b"keep me"
    assert source.read_bytes() == data


def test_other_link_errors_are_raised(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", link_raising(lambda src: errno.ENOSPC))
    source = inbox / "IMG_0001.JPG"
    make_image(source)

    with pytest.raises(OSError) as caught:
        move_durably(source, tmp_path / "review" / "IMG_0001.JPG")

    assert caught.value.errno == errno.ENOSPC
    assert source.exists()


# --- move_durably across filesystems ---------------------------------------------------------


@pytest.mark.usefixtures("force_cross_device")
def test_move_across_filesystems_copies_verifies_and_removes_source(
    inbox: Path, tmp_path: Path
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    inode = source.stat().st_ino
    destination = tmp_path / "review" / "IMG_0001.JPG"

    move_durably(source, destination)

    assert not source.exists()
    assert destination.read_bytes() == data
    assert destination.stat().st_ino != inode  # a real copy was made
    assert destination.stat().st_mtime_ns == OLD_MTIME_NS
    assert destination.stat().st_mode & 0o777 == 0o640
    assert partial_files(destination.parent) == []


def test_move_across_filesystems_to_a_target_without_hard_links(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A vfat USB disk: EXDEV from the inbox, and no link() inside the target either.
    monkeypatch.setattr(
        os, "link", link_raising(lambda src: errno.EXDEV if src.parent == inbox else errno.EPERM)
    )
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "usb" / "IMG_0001.JPG"

    move_durably(source, destination)

    assert not source.exists()
    assert destination.read_bytes() == data
    assert partial_files(destination.parent) == []


@pytest.mark.usefixtures("force_cross_device")
def test_failure_after_temp_written_leaves_source_and_no_temp(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    seen_temp: list[bytes] = []

    def fail_publish(temporary: Path, final: Path) -> None:
        seen_temp.append(temporary.read_bytes())
        raise OSError(errno.EIO, "disk pulled", str(final))

    monkeypatch.setattr(fileops, "_publish_no_clobber", fail_publish)

    with pytest.raises(OSError, match="disk pulled"):
        move_durably(source, destination)

    assert seen_temp == [data]  # the failure really came after a complete temp copy
    assert source.read_bytes() == data
    assert not destination.exists()
    assert partial_files(destination.parent) == []


@pytest.mark.usefixtures("force_cross_device")
def test_corrupted_copy_is_detected_and_discarded(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    real_write_all = fileops._write_all

    def flip_first_byte(fd: int, chunk: bytes) -> None:
        real_write_all(fd, bytes([chunk[0] ^ 0xFF]) + chunk[1:])

    monkeypatch.setattr(fileops, "_write_all", flip_first_byte)

    with pytest.raises(OSError, match="SHA-256") as caught:
        move_durably(source, destination)

    assert caught.value.errno == errno.EIO
    assert source.read_bytes() == data
    assert not destination.exists()
    assert partial_files(destination.parent) == []


@pytest.mark.usefixtures("force_cross_device")
def test_copy_never_overwrites_a_file_that_appears_meanwhile(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    real_copy = fileops._write_verified_copy

    def copy_then_race(*args: Any) -> None:
        real_copy(*args)
        destination.write_bytes(b"someone else's file")

    monkeypatch.setattr(fileops, "_write_verified_copy", copy_then_race)

    with pytest.raises(FileExistsError):
        move_durably(source, destination)

    assert destination.read_bytes() == b"someone else's file"
    assert source.read_bytes() == data
    assert partial_files(destination.parent) == []


@pytest.mark.usefixtures("force_cross_device")
def test_source_growing_during_copy_aborts(
    inbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = inbox / "IMG_0001.JPG"
    make_image(source)
    destination = tmp_path / "review" / "IMG_0001.JPG"
    real_pump = fileops._pump

    def pump_while_upload_continues(reader: Any, out_fd: int) -> str:
        digest = real_pump(reader, out_fd)
        with source.open("ab") as upload:
            upload.write(b"more bytes from a slow FTP upload")
        return digest

    monkeypatch.setattr(fileops, "_pump", pump_while_upload_continues)

    with pytest.raises(OSError, match="changed while"):
        move_durably(source, destination)

    assert source.exists()
    assert not destination.exists()
    assert partial_files(destination.parent) == []


def test_real_move_to_another_filesystem(inbox: Path, other_device_dir: Path) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = other_device_dir / "review" / "IMG_0001.JPG"

    move_durably(source, destination)

    assert not source.exists()
    assert destination.read_bytes() == data
    assert destination.stat().st_mtime_ns == OLD_MTIME_NS
    assert partial_files(destination.parent) == []


def test_real_cross_device_move_never_overwrites(inbox: Path, other_device_dir: Path) -> None:
    source = inbox / "IMG_0001.JPG"
    data = make_image(source)
    destination = other_device_dir / "IMG_0001.JPG"
    destination.write_bytes(b"keep me")

    with pytest.raises(FileExistsError):
        move_durably(source, destination)

    assert source.read_bytes() == data
    assert destination.read_bytes() == b"keep me"


# --- symlinks --------------------------------------------------------------------------------


@pytest.fixture(params=["same_filesystem", "cross_filesystem"])
def link_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, inbox: Path) -> str:
    if request.param == "cross_filesystem":
        monkeypatch.setattr(
            os, "link", link_raising(lambda src: errno.EXDEV if src.parent == inbox else None)
        )
    return str(request.param)


def test_symlink_is_moved_as_a_link(link_mode: str, inbox: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "real.jpg"
    data = make_image(target)
    source = inbox / "link.jpg"
    source.symlink_to("../elsewhere//./real.jpg")  # odd spelling must survive unchanged
    destination = tmp_path / "quarantine" / "link.jpg"

    move_durably(source, destination)

    assert not os.path.lexists(source)
    assert destination.is_symlink()
    assert link_text(destination) == "../elsewhere//./real.jpg"
    assert target.read_bytes() == data
    assert target.stat().st_nlink == 1  # never hard-linked through the symlink
    assert target.stat().st_mtime_ns == OLD_MTIME_NS


def test_dangling_symlink_is_moved(link_mode: str, inbox: Path, tmp_path: Path) -> None:
    source = inbox / "dangling.jpg"
    source.symlink_to("/nonexistent/tigerwatch/photo.jpg")
    destination = tmp_path / "quarantine" / "dangling.jpg"

    move_durably(source, destination)

    assert not os.path.lexists(source)
    assert link_text(destination) == "/nonexistent/tigerwatch/photo.jpg"
    assert partial_files(destination.parent) == []


# --- settle_move -----------------------------------------------------------------------------


@pytest.fixture
def pair(inbox: Path, tmp_path: Path) -> tuple[Path, Path]:
    destination_dir = tmp_path / "review"
    destination_dir.mkdir()
    return inbox / "IMG_0001.JPG", destination_dir / "IMG_0001.JPG"


def test_settle_only_destination_is_already_moved(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(destination)

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.ALREADY_MOVED
    assert destination.read_bytes() == data


def test_settle_same_inode_completes_the_unlink(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)
    os.link(source, destination)  # crash came between link() and unlink()

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.COMPLETED
    assert not source.exists()
    assert destination.read_bytes() == data


def test_settle_finished_copy_completes(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)
    shutil.copyfile(source, destination)  # crash came after publish, before unlink

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.COMPLETED
    assert not source.exists()
    assert destination.read_bytes() == data


def test_settle_finished_copy_without_recorded_hash_compares_files(
    pair: tuple[Path, Path],
) -> None:
    source, destination = pair
    make_image(source)
    shutil.copyfile(source, destination)

    assert settle_move(source, destination, None) == SettleOutcome.COMPLETED
    assert not source.exists()


def test_settle_different_destination_is_taken(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)
    destination.write_bytes(b"another camera's IMG_0001.JPG")

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.DESTINATION_TAKEN
    assert source.read_bytes() == data
    assert destination.read_bytes() == b"another camera's IMG_0001.JPG"


def test_settle_keeps_a_source_that_changed_since_it_was_recorded(
    pair: tuple[Path, Path],
) -> None:
    source, destination = pair
    recorded = make_image(destination)
    source.write_bytes(b"new bytes written after the hash was recorded")

    outcome = settle_move(source, destination, sha256_bytes(recorded))

    assert outcome == SettleOutcome.DESTINATION_TAKEN
    assert source.exists()


def test_settle_only_source_is_not_started(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.NOT_STARTED
    assert source.read_bytes() == data


def test_settle_neither_is_missing(pair: tuple[Path, Path]) -> None:
    source, destination = pair

    assert settle_move(source, destination, sha256_bytes(b"x")) == SettleOutcome.MISSING


def test_settle_symlinks_compare_targets(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    source.symlink_to("../a.jpg")
    destination.symlink_to("../a.jpg")

    assert settle_move(source, destination, None) == SettleOutcome.COMPLETED
    assert not os.path.lexists(source)
    assert link_text(destination) == "../a.jpg"


def test_settle_symlinks_with_different_targets(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    source.symlink_to("../a.jpg")
    destination.symlink_to("../b.jpg")

    assert settle_move(source, destination, None) == SettleOutcome.DESTINATION_TAKEN
    assert os.path.lexists(source)


def test_settle_file_versus_symlink_is_taken(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)
    destination.symlink_to(source)

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.DESTINATION_TAKEN
    assert source.read_bytes() == data


def test_settle_removes_only_this_names_partial_files(pair: tuple[Path, Path]) -> None:
    source, destination = pair
    data = make_image(source)
    ours = destination.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}-IMG_0001.JPG"
    theirs = destination.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}-IMG_0002.JPG"
    ours.write_bytes(data[:10])
    theirs.write_bytes(b"other move")

    assert settle_move(source, destination, sha256_bytes(data)) == SettleOutcome.NOT_STARTED
    assert not ours.exists()
    assert theirs.exists()


def test_settle_keeps_partial_when_source_and_destination_are_gone(
    pair: tuple[Path, Path],
) -> None:
    source, destination = pair
    leftover = destination.parent / f"{PARTIAL_PREFIX}{secrets.token_hex(8)}-IMG_0001.JPG"
    leftover.write_bytes(b"possibly the last copy")

    assert settle_move(source, destination, None) == SettleOutcome.MISSING
    assert leftover.exists()


CRASH_AFTER_TEMP_WRITTEN = """
import errno, os, sys
from pathlib import Path
from daemon.delivery import fileops

source, destination = Path(sys.argv[1]), Path(sys.argv[2])
real_link = os.link

def link(src, dst, **kwargs):
    if Path(src) == source:
        raise OSError(errno.EXDEV, "cross-device")
    real_link(src, dst, **kwargs)

def die(temporary, final):
    os._exit(137)  # like kill -9: no cleanup handlers run

os.link = link
fileops._publish_no_clobber = die
fileops.move_durably(source, destination)
"""


@pytest.mark.parametrize("name", ["IMG_0001.JPG", "я" * 120 + ".JPG"])
def test_settle_after_crash_mid_copy(name: str, inbox: Path, tmp_path: Path) -> None:
    source = inbox / name
    data = make_image(source)
    destination = tmp_path / "review" / name
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_TEMP_WRITTEN, str(source), str(destination)],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
    )
    assert crashed.returncode == 137, crashed.stderr.decode()
    [leftover] = partial_files(destination.parent)
    assert len(os.fsencode(leftover.name)) <= 255

    outcome = settle_move(source, destination, sha256_bytes(data))

    assert outcome == SettleOutcome.NOT_STARTED
    assert partial_files(destination.parent) == []
    move_durably(source, destination)
    assert destination.read_bytes() == data


# --- write_sidecar ---------------------------------------------------------------------------


def test_write_sidecar_writes_text_beside_image(tmp_path: Path) -> None:
    image = tmp_path / "IMG_0001.JPG"
    make_image(image)

    sidecar = write_sidecar(image, "species: Amur tiger\nscore: 0.97\nзаметка ✓\n")

    assert sidecar == tmp_path / "IMG_0001.JPG.txt"
    assert sidecar.read_text(encoding="utf-8") == "species: Amur tiger\nscore: 0.97\nзаметка ✓\n"
    assert partial_files(tmp_path) == []


def test_write_sidecar_never_overwrites(tmp_path: Path) -> None:
    image = tmp_path / "IMG_0001.JPG"
    make_image(image)

    first = write_sidecar(image, "first")
    second = write_sidecar(image, "second")
    third = write_sidecar(image, "third")

    assert [first.name, second.name, third.name] == [
        "IMG_0001.JPG.txt",
        "IMG_0001.JPG-1.txt",
        "IMG_0001.JPG-2.txt",
    ]
    assert [p.read_text() for p in (first, second, third)] == ["first", "second", "third"]


def test_write_sidecar_failure_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "IMG_0001.JPG"
    make_image(image)

    def fail(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "disk full")

    monkeypatch.setattr(fileops, "_publish_no_clobber", fail)

    with pytest.raises(OSError, match="disk full"):
        write_sidecar(image, "text")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG_0001.JPG"]


# --- hashes and fsync ------------------------------------------------------------------------


def test_sha256_bytes_known_vector() -> None:
    assert sha256_bytes(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)

    assert sha256_file(path, chunk_size=1024) == hashlib.sha256(data).hexdigest()


def test_sha256_file_refuses_symlink(tmp_path: Path) -> None:
    (tmp_path / "real.jpg").write_bytes(b"data")
    link = tmp_path / "link.jpg"
    link.symlink_to("real.jpg")

    with pytest.raises(OSError) as caught:
        sha256_file(link)

    assert caught.value.errno == errno.ELOOP


def test_sha256_file_refuses_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)

    with pytest.raises(OSError) as caught:
        sha256_file(fifo)

    assert caught.value.errno == errno.EINVAL


def test_fsync_directory(tmp_path: Path) -> None:
    fsync_directory(tmp_path)
    (tmp_path / "file").write_bytes(b"x")

    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "file")


def test_unique_destination_skips_reserved_names(tmp_path: Path) -> None:
    (tmp_path / "IMG_0001.JPG").write_bytes(b"on disk")
    reserved = {tmp_path / "IMG_0001-1.JPG"}
    assert unique_destination(tmp_path, "IMG_0001.JPG", reserved=reserved) == (
        tmp_path / "IMG_0001-2.JPG"
    )
    assert unique_destination(tmp_path, "new.jpg", reserved={tmp_path / "new.jpg"}) == (
        tmp_path / "new-1.jpg"
    )
