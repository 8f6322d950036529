"""Decode stages: CPU per frame to read, hash, decode (draft and full) and preprocess a frame."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import CLIPProcessor

from bench.harness import say
from bench.inputs import DRAFT_SIZE
from daemon.decode.imaging import decode_image
from daemon.decode.preprocess import PreprocessSpec, spec_from_processor, to_pixels

MAX_STAGE_FRAMES = 20  # enough for a stable median; each full decode of 12 MP costs ~0.1 s


@dataclass(frozen=True)
class DecodeStages:
    """Median CPU milliseconds per frame of each step a decoder process takes."""

    frames: int
    read_ms: float
    sha256_ms: float
    decode_draft_ms: float  # what the daemon does: libjpeg scaled down towards the model's input
    decode_full_ms: float  # the same file decoded at full size, for comparison
    preprocess_ms: float  # resize, crop and normalise the drafted image


def measure_decode_stages(model_dir: Path, frames: Sequence[Path]) -> DecodeStages:
    """Each stage timed on this thread's CPU clock, frame by frame, the median kept."""
    processor = CLIPProcessor.from_pretrained(model_dir, backend="pil")
    spec = spec_from_processor(processor.image_processor)
    paths = list(frames[:MAX_STAGE_FRAMES])
    per_frame = np.array([_stages_of(path, spec) for path in paths])
    medians = [float(value) for value in np.median(per_frame, axis=0)]
    return DecodeStages(len(paths), *medians)


def _stages_of(path: Path, spec: PreprocessSpec) -> tuple[float, float, float, float, float]:
    # thread_time: CPU of this thread only, so a busy neighbour does not inflate the figures.
    clock = time.thread_time
    began = clock()
    data = path.read_bytes()
    read = clock()
    hashlib.sha256(data).digest()
    hashed = clock()
    drafted = decode_image(data, name=str(path), draft_size=DRAFT_SIZE)
    decoded = clock()
    decode_image(data, name=str(path), draft_size=None)
    full = clock()
    to_pixels(drafted.image, spec)
    done = clock()
    steps = (read - began, hashed - read, decoded - hashed, full - decoded, done - full)
    return tuple(1000 * step for step in steps)  # type: ignore[return-value]


def report_decode_stages(stages: DecodeStages) -> None:
    say(
        f"  read {stages.read_ms:.1f}, sha256 {stages.sha256_ms:.1f}, decode "
        f"{stages.decode_draft_ms:.1f} (draft {DRAFT_SIZE}; without the draft "
        f"{stages.decode_full_ms:.1f}), preprocess {stages.preprocess_ms:.1f} ms per frame"
    )
