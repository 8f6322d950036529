"""An int8 tower gives back the float pages of its weights file; results stay the same."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest

import daemon.classify.classifier as classifier_module
from daemon.classify.classifier import ClipClassifier
from daemon.classify.mapped_pages import release_mapped_pages

LABELS = ["a photo of a tiger", "a photo of a cat"]
TARGETS = [True, False]


def _filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts (longest mount point)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if str(path).startswith(point.rstrip("/") + "/") and len(point) > len(best):
            best, kind = point, fstype
    return kind


def _resident_kib(path: Path) -> int:
    """This process's resident KiB of its mappings of `path` (smaps), 0 when it maps none."""
    inode = str(path.stat().st_ino)
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
            inside = fields[4] == inode
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture
def on_disk(tmp_path: Path) -> Path:
    if _filesystem_type(tmp_path) in ("tmpfs", "ramfs", "unknown"):
        pytest.skip("memory-backed files have no pages to give back to a disk")
    return tmp_path


def test_released_pages_leave_the_process_and_read_back_the_same(on_disk: Path) -> None:
    path = on_disk / "weights.bin"
    data = np.random.default_rng(0).integers(0, 255, 4 << 20, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        assert mapped[:] == data  # every page read: resident
        assert _resident_kib(path) >= 4 << 10

        assert release_mapped_pages(str(path)) >= len(data)
        assert _resident_kib(path) < 1 << 10
        assert mapped[:] == data  # read again from the file


def test_a_file_this_process_does_not_map_releases_nothing(tmp_path: Path) -> None:
    path = tmp_path / "unmapped.bin"
    path.write_bytes(b"x" * 8192)
    assert release_mapped_pages(str(path)) == 0
    assert release_mapped_pages(str(tmp_path / "missing.bin")) == 0


def test_an_int8_tower_keeps_no_pages_of_its_weights_file_and_decides_the_same(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tiny_model_dir / "model.safetensors"
    if _filesystem_type(tiny_model_dir) in ("tmpfs", "ramfs", "unknown"):
        pytest.skip("the tiny model lies on a memory-backed filesystem")
    released = ClipClassifier.load(str(tiny_model_dir), LABELS, TARGETS, precision="int8")
    assert _resident_kib(weights) == 0

    monkeypatch.setattr(classifier_module, "release_mapped_pages", lambda path: 0)
    kept = ClipClassifier.load(str(tiny_model_dir), LABELS, TARGETS, precision="int8")
    assert _resident_kib(weights) > 0  # the float weights were read to quantise them

    size = released.input_size
    levels = [np.random.default_rng(1).integers(0, 255, (2, size, size, 3), dtype=np.uint8)]
    [after] = released.classify_pixels(levels)
    [before] = kept.classify_pixels(levels)
    assert after.probabilities == before.probabilities
    assert np.array_equal(after.embedding, before.embedding)
