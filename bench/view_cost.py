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
from daemon.decode.imaging import decode_image
from daemon.decode.preprocess import spec_from_processor
from daemon.decode.views import VIEWS, View, to_views

MAX_VIEW_FRAMES = 10


@dataclass(frozen=True)
class ViewCost:
    """One view's cost per frame: model inputs, CPU to make them, model time for them."""

    view: View
    inputs_per_frame: float
    prepare_ms: float  # median CPU of one thread to resize, cut and normalise the views
    model_ms: float  # inputs_per_frame at the classifier-alone rate (c)


def measure_view_costs(model_dir: Path, frames: Sequence[Path], model: Rate) -> list[ViewCost]:
    """Each view on the same drafted frames; the model part from the measured rate (c)."""
    processor = CLIPProcessor.from_pretrained(model_dir, backend="pil")
    spec = spec_from_processor(processor.image_processor)
    images = [
        decode_image(path.read_bytes(), name=str(path), draft_size=DRAFT_SIZE).image
        for path in frames[:MAX_VIEW_FRAMES]
    ]
    per_input_ms = 1000 / model.per_second
    costs = []
    for view in VIEWS:
        counts, prepare = [], []
        for image in images:
            began = time.thread_time()
            counts.append(to_views(image, spec, view).shape[0])
            prepare.append(1000 * (time.thread_time() - began))
        inputs = float(np.mean(counts))
        costs.append(ViewCost(view, inputs, float(np.median(prepare)), inputs * per_input_ms))
    return costs


def report_view_costs(costs: Sequence[ViewCost]) -> None:
    for cost in costs:
        say(
            f"  view {cost.view:<6}: {cost.inputs_per_frame:.2f} model inputs per frame, "
            f"prepare {cost.prepare_ms:.1f} ms + model {cost.model_ms:.1f} ms per frame"
        )
