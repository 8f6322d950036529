"""View cost: per model.view, the model inputs per frame and the CPU to make and classify them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import CLIPProcessor

from bench.harness import Rate, say
from bench.inputs import DRAFT_SIZE
from daemon.config_strips import Strips
from daemon.decode.imaging import ImageError, decode_image
from daemon.decode.jobs import DecodeJob, decode_bytes
from daemon.decode.preprocess import PreprocessSpec, normalise_levels, spec_from_processor
from daemon.decode.views import VIEWS, View, to_view_levels

MAX_VIEW_FRAMES = 10


@dataclass(frozen=True)
class ViewCost:
    """One view's cost per frame: model inputs, CPU to make them, model time for them."""

    view: View
    inputs_per_frame: float  # mean over every file the daemon is given, as the daemon cuts them
    prepare_ms: float  # median CPU of one thread to resize, cut and normalise the views
    model_ms: float  # inputs_per_frame at the classifier-alone rate (c)


def measure_view_costs(
    model_dir: Path, frames: Sequence[Path], files: Sequence[Path], model: Rate
) -> list[ViewCost]:
    """Each view on the same drafted frames; inputs counted on `files` (the daemon's decode
    step, info strips cut); the model part from the measured rate (c)."""
    processor = CLIPProcessor.from_pretrained(model_dir, backend="pil")
    spec = spec_from_processor(processor.image_processor)
    images = [
        decode_image(path.read_bytes(), name=str(path), draft_size=DRAFT_SIZE).image
        for path in frames[:MAX_VIEW_FRAMES]
    ]
    per_input_ms = 1000 / model.per_second
    costs = []
    for view in VIEWS:
        prepare = []
        for image in images:
            began = time.thread_time()
            normalise_levels(to_view_levels(image, spec, view), spec)
            prepare.append(1000 * (time.thread_time() - began))
        inputs = inputs_per_file(files, spec, view)
        costs.append(ViewCost(view, inputs, float(np.median(prepare)), inputs * per_input_ms))
    return costs


def inputs_per_file(files: Sequence[Path], spec: PreprocessSpec, view: View) -> float:
    """The mean model inputs per file for `view`, from the daemon's own decode step."""
    if view != "crops":
        return 1.0  # center and pad are one view whatever the frame
    counts = []
    for path in files:
        job = DecodeJob(
            path=str(path),
            sha256="",
            formats=("JPEG", "MPO", "PNG", "WEBP"),
            max_pixels=120_000_000,
            draft_size=DRAFT_SIZE,
            spec=spec,
            view=view,
            strips=Strips(),
        )
        try:
            pixels = decode_bytes(path.read_bytes(), job).get("pixels")
        except (OSError, ImageError):
            continue
        if pixels is not None:
            counts.append(pixels.shape[0])
    return float(np.mean(counts)) if counts else 1.0


def report_view_costs(costs: Sequence[ViewCost]) -> None:
    for cost in costs:
        say(
            f"  view {cost.view:<6}: {cost.inputs_per_frame:.2f} model inputs per file, "
            f"prepare {cost.prepare_ms:.1f} ms + model {cost.model_ms:.1f} ms per file"
        )
