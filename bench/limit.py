"""This CPU's limit per precision and view: usable cores over model CPU plus the decode floor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.classifier_alone import PrecisionResult
from bench.decode_stages import DecodeStages
from bench.harness import usable_cores
from bench.view_cost import ViewCost
from daemon.classify.cpu_caps import this_cpu_has_native_bf16


@dataclass(frozen=True)
class Limit:
    precision: str
    view: str
    inputs_per_file: float  # model inputs per file for this view (crops: 2 for a 4:3 frame)
    model_cpu_ms: float  # per file: the model's CPU per input times the inputs
    decode_floor_ms: float  # per file: draft decode plus making (and normalising) the views
    images_per_second: float  # usable cores / (model CPU + decode floor) per file


@dataclass(frozen=True)
class DaemonRate:
    """One daemon run's b (its burst less the quiet period), with the precision it ran at
    (never auto) and its view; and its burst's rate with the quiet period left in."""

    precision: str
    view: str
    images_per_second: float
    with_quiet_per_second: float


def decode_floor_ms(stages: DecodeStages, view: ViewCost) -> float:
    """The least one process spends to turn a frame into the view's model inputs: the draft JPEG
    decode (the Huffman pass no library skips) and the resize, cut and normalisation of the
    views; no hashing, strips, database or moves."""
    return stages.decode_draft_ms + view.prepare_ms


def limits(
    results: Sequence[PrecisionResult], stages: DecodeStages, views: Sequence[ViewCost]
) -> list[Limit]:
    """Per view, fp32 and int8 always; bf16 only where this CPU has it natively (else auto never
    runs it)."""
    cores = usable_cores()
    native = this_cpu_has_native_bf16()
    found = []
    for view in views:
        floor = decode_floor_ms(stages, view)
        for result in results:
            if result.precision == "bf16" and not native:
                continue
            model = result.cpu_ms_per_image * view.inputs_per_frame
            rate = 1000 * cores / (model + floor)
            found.append(
                Limit(result.precision, view.view, view.inputs_per_frame, model, floor, rate)
            )
    return found


def run_for(limit: Limit, runs: Sequence[DaemonRate]) -> DaemonRate | None:
    for run in runs:
        if (run.precision, run.view) == (limit.precision, limit.view):
            return run
    return None


def report_limits(found: Sequence[Limit], runs: Sequence[DaemonRate]) -> list[str]:
    """One line per precision and view the daemon ran with; b/limit where it ran with both."""
    order = list(dict.fromkeys(run.view for run in runs))
    shown_limits = sorted(
        (limit for limit in found if limit.view in order), key=lambda item: order.index(item.view)
    )
    lines = [
        f"limit = usable cores ({usable_cores()}) / (model CPU per file + decode floor per "
        "file); model CPU = CPU per input (c, every thread) x inputs per file; decode floor = "
        "draft decode + making the view's inputs, one process; b = files / (first drop to last "
        "file done - the quiet period); (with the quiet period) = b/limit with it left in:"
    ]
    for limit in shown_limits:
        run = run_for(limit, runs)
        shown = (
            f"b/limit = {run.images_per_second / limit.images_per_second:.2f} (with the quiet "
            f"period {run.with_quiet_per_second / limit.images_per_second:.2f})"
            if run is not None
            else f"b/limit: not run (--precision {limit.precision} --view {limit.view})"
        )
        lines.append(
            f"  {limit.precision:<5} {limit.view:<6} limit = {usable_cores()} / "
            f"({limit.model_cpu_ms:.1f} + {limit.decode_floor_ms:.1f} ms) = "
            f"{limit.images_per_second:5.1f} images/s   {shown}"
        )
    return lines
