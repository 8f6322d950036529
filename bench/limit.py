"""This CPU's limit per precision: usable cores over model CPU plus the decode floor, per image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.classifier_alone import PrecisionResult
from bench.decode_stages import DecodeStages
from bench.harness import usable_cores
from daemon.classify.cpu_caps import this_cpu_has_native_bf16


@dataclass(frozen=True)
class Limit:
    precision: str
    model_cpu_ms: float
    decode_floor_ms: float
    images_per_second: float  # usable cores / (model CPU + decode floor) per image


def decode_floor_ms(stages: DecodeStages) -> float:
    """The least one process spends to turn a frame into model input: the draft JPEG decode
    (the Huffman pass no library skips) and the resize to the model's size; no hashing,
    database or moves."""
    return stages.decode_draft_ms + stages.preprocess_ms


def limits(results: Sequence[PrecisionResult], stages: DecodeStages) -> list[Limit]:
    """fp32 and int8 always; bf16 only where this CPU has it natively (else auto never runs it)."""
    floor = decode_floor_ms(stages)
    cores = usable_cores()
    native = this_cpu_has_native_bf16()
    return [
        Limit(r.precision, r.cpu_ms_per_image, floor, 1000 * cores / (r.cpu_ms_per_image + floor))
        for r in results
        if r.precision != "bf16" or native
    ]


def report_limits(found: Sequence[Limit], daemon_precision: str, daemon_rate: float) -> list[str]:
    """One line per precision; b/limit where the daemon ran at that precision."""
    lines = [
        f"limit = usable cores ({usable_cores()}) / (model CPU/img + decode floor/img), "
        "decode floor = draft decode + resize to the model's size, one process:"
    ]
    for limit in found:
        ratio = (
            f"b/limit = {daemon_rate / limit.images_per_second:.2f}"
            if limit.precision == daemon_precision
            else f"b/limit: run with --precision {limit.precision}"
        )
        lines.append(
            f"  {limit.precision:<5} limit = {usable_cores()} / ({limit.model_cpu_ms:.1f} + "
            f"{limit.decode_floor_ms:.1f} ms) = {limit.images_per_second:.1f} images/s   {ratio}"
        )
    return lines
