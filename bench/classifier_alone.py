"""(c) The classifier alone on ready 224x224 tensors, per precision, with its fidelity."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.fidelity import Fidelity, compare, embed, preprocessed
from bench.harness import Rate, say
from bench.inputs import DRAFT_SIZE, TARGETS
from bench.settings import Settings
from daemon.classify.classifier import ClipClassifier
from daemon.classify.lanes import plan_lanes
from daemon.classify.precision import PRECISIONS, Precision
from daemon.config import DEFAULT_LABELS


@dataclass(frozen=True)
class PrecisionResult:
    precision: Precision
    speed: Rate
    fidelity: Fidelity
    cpu_ms_per_image: float  # process CPU (every thread), not wall: what the model costs the cores


def load_classifier(model_dir: Path, precision: Precision) -> ClipClassifier:
    return ClipClassifier.load(str(model_dir), DEFAULT_LABELS, TARGETS, precision=precision)


def classifier_speed(
    classifier: ClipClassifier, batch: torch.Tensor, min_seconds: float
) -> tuple[Rate, Rate, float]:
    """classify_tensors on one ready batch, the way the daemon runs the model: in its lanes
    (daemon/classify/lanes.py; on a CPU one single-threaded batch per core, side by side),
    each lane repeating the batch for at least min_seconds (and 3 batches).

    Returns the rates of the median and of the fastest batch, times the lanes: on a shared
    machine a neighbour's burst then spoils a few batches rather than the figure, and the
    fastest batch shows what the model can do when it has the cores to itself. The third
    value is the process CPU milliseconds per image over the timed batches.
    """
    plan = plan_lanes(None, None, on_gpu=classifier.on_gpu)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(plan.threads_per_lane)
    try:
        classifier.classify_tensors(batch)  # warm-up: first-call allocations, oneDNN kernels
        durations: list[list[float]] = [[] for _ in range(plan.lanes)]

        def lane(index: int, started: float) -> None:
            while len(durations[index]) < 3 or time.perf_counter() - started < min_seconds:
                batch_started = time.perf_counter()
                classifier.classify_tensors(batch)
                durations[index].append(time.perf_counter() - batch_started)

        cpu_started = time.process_time()
        started = time.perf_counter()
        threads = [
            threading.Thread(target=lane, args=(index, started)) for index in range(plan.lanes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu_seconds = time.process_time() - cpu_started
    finally:
        torch.set_num_threads(threads_before)
    every = [duration for lane_durations in durations for duration in lane_durations]
    cpu_ms = 1000 * cpu_seconds / (len(batch) * len(every))
    median = Rate(len(batch) * plan.lanes, float(np.median(every)))
    return median, Rate(len(batch) * plan.lanes, min(every)), cpu_ms


def speed_batch(fidelity_pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    indices = [index % len(fidelity_pixels) for index in range(batch_size)]
    return fidelity_pixels[indices].contiguous()


def measure_precisions(
    model_dir: Path, fidelity_paths: Sequence[Path], settings: Settings
) -> tuple[list[PrecisionResult], Fidelity]:
    """Speed and fidelity (vs fp32) per precision; plus draft-vs-full decoding under fp32."""
    fp32 = load_classifier(model_dir, "fp32")
    draft_pixels = preprocessed(fp32, fidelity_paths, DRAFT_SIZE)
    full_pixels = preprocessed(fp32, fidelity_paths, None)
    reference = embed(fp32, draft_pixels, settings.batch_size)
    draft_fidelity = compare(embed(fp32, full_pixels, settings.batch_size), reference)
    batch = speed_batch(draft_pixels, settings.batch_size)
    del fp32
    results = []
    for precision in PRECISIONS:
        classifier = load_classifier(model_dir, precision)
        speed, best, cpu_ms = classifier_speed(classifier, batch, settings.speed_seconds)
        fidelity = compare(reference, embed(classifier, draft_pixels, settings.batch_size))
        results.append(PrecisionResult(precision, speed, fidelity, cpu_ms))
        say(
            f"  {precision:<5} {speed.per_second:7.1f} images/s (best batch "
            f"{best.per_second:6.1f}; {cpu_ms:.1f} ms CPU/img)   min cosine "
            f"{fidelity.min_cosine:.6f}   max |dp| {fidelity.max_probability_diff:.2e}"
        )
        del classifier
        gc.collect()
    return results, draft_fidelity
