"""The benchmark's inputs: the random CLIP, the real sample photos and the list of files to drop."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.harness import REPO_ROOT, say
from daemon.config import DEFAULT_LABELS
from daemon.decode.imaging import ImageError, decode_image
from scripts.make_test_model import build_test_model

DEFAULT_CACHE_DIR = REPO_ROOT / "bench" / "out"


SAMPLES_DIR = REPO_ROOT.parent / "shared" / "samples"


SAMPLE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


LABELS: tuple[str, ...] = tuple(label.name for label in DEFAULT_LABELS)


# The notebook ran one prompt per label: each default label's first day prompt.
NOTEBOOK_PROMPTS: tuple[str, ...] = tuple(label.prompts[0] for label in DEFAULT_LABELS)


TARGETS: tuple[bool, ...] = tuple(label.target for label in DEFAULT_LABELS)


DRAFT_SIZE = 224  # the daemon drafts JPEGs to the model's input size


@dataclass(frozen=True)
class BenchFile:
    """One input file: where it is cached and the name it gets in the inbox."""

    path: Path
    inbox_name: str


def ensure_model(cache_dir: Path, *, full_size: bool) -> Path:
    """Build the random CLIP once; a finished build is marked so a killed one is redone."""
    folder = cache_dir / ("clip-vit-b32-random" if full_size else "clip-tiny-random")
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    say(f"building {'ViT-B/32-sized' if full_size else 'tiny'} random CLIP in {folder} ...")
    build_test_model(folder, full_size=full_size)
    marker.touch()
    return folder


def _decodes_both_ways(path: Path) -> bool:
    """The daemon's decoder, with and without draft: files it would quarantine are left out."""
    data = path.read_bytes()
    try:
        decode_image(data, name=str(path), draft_size=DRAFT_SIZE)
        decode_image(data, name=str(path), draft_size=None)
    except ImageError:
        return False
    return True


def usable_samples(limit: int | None) -> tuple[list[Path], list[Path]]:
    """(usable, left out) real sample photos, deduplicated by content; none when absent."""
    if not SAMPLES_DIR.is_dir():
        return [], []
    seen: set[str] = set()
    usable: list[Path] = []
    left_out: list[Path] = []
    candidates = sorted(p for p in SAMPLES_DIR.rglob("*") if p.suffix.lower() in SAMPLE_SUFFIXES)
    for path in candidates:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen or not _decodes_both_ways(path):
            left_out.append(path)
            continue
        seen.add(digest)
        usable.append(path)
    return usable[:limit], left_out


def bench_files(frames: Sequence[Path], samples: Sequence[Path]) -> list[BenchFile]:
    files = [BenchFile(path, path.name) for path in frames]
    for path in samples:
        relative = path.relative_to(SAMPLES_DIR)
        files.append(BenchFile(path, "sample_" + "_".join(relative.parts)))
    return files


def evenly_spaced(items: Sequence[BenchFile], count: int) -> list[BenchFile]:
    """A subset spread over the whole list, so it has the same mix of frames and samples."""
    if count >= len(items):
        return list(items)
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[position] for position in sorted(set(positions.tolist()))]


def describe_inputs(
    files: Sequence[BenchFile], frames: int, samples: int, left_out: Sequence[Path]
) -> None:
    total_mb = sum(file.path.stat().st_size for file in files) / 1e6
    say(
        f"inputs: {frames} synthetic frames + {samples} real samples = {len(files)} files, "
        f"{total_mb:.0f} MB"
    )
    if left_out:
        names = ", ".join(path.name for path in left_out)
        say(
            f"  samples left out: {names} (duplicate content, or the daemon's decoder refuses "
            "it, so it would wait out decode retries)"
        )
    if not SAMPLES_DIR.is_dir():
        say(f"  no samples at {SAMPLES_DIR}: fidelity uses synthetic frames")
