"""compare-precision: every precision this machine can run, on the station's classified frames."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.classify.classifier import ClipClassifier
from daemon.classify.cpu_caps import this_cpu_has_native_bf16
from daemon.classify.oneshot import FileOutcome, classify_files
from daemon.classify.precision import Precision, resolve_device
from daemon.cli_progress import Track, untracked
from daemon.config import Config


@dataclass(frozen=True)
class PrecisionReport:
    precision: Precision
    images: int
    images_per_second: float  # decode and model, wall time, as `classify` would run them
    changed: int  # frame decisions that differ from fp32's


def runnable_precisions(device: str) -> list[Precision]:
    """fp32 first (the reference); bf16 only where native; int8 only on the CPU."""
    if resolve_device(device).type == "cuda":
        return ["fp32", "bf16"]
    found: list[Precision] = ["fp32", "int8"]
    if this_cpu_has_native_bf16():
        found.append("bf16")
    return found


def compare_precisions(
    config: Config, paths: Sequence[Path], *, track: Track = untracked
) -> tuple[list[PrecisionReport], list[FileOutcome]]:
    """One report per precision; plus the files fp32 could not read (named, then left out)."""
    reference: dict[Path, str] = {}
    reports: list[PrecisionReport] = []
    failed: list[FileOutcome] = []
    for precision in runnable_precisions(config.model.device):
        classifier = _load(config, precision)
        started = time.perf_counter()
        outcomes = list(
            track(classify_files(classifier, paths, config), f"compare {precision}", len(paths))
        )
        seconds = time.perf_counter() - started
        good = {o.path: str(o.decision) for o in outcomes if o.decision is not None}
        if precision == "fp32":
            reference = good
            failed = [o for o in outcomes if o.error is not None]
        changed = sum(1 for path, decision in good.items() if reference.get(path) != decision)
        reports.append(
            PrecisionReport(precision, len(good), len(good) / max(seconds, 1e-9), changed)
        )
    return reports, failed


def _load(config: Config, precision: Precision) -> ClipClassifier:
    return ClipClassifier.load(
        config.model.name_or_path,
        config.labels,
        [label.target for label in config.labels],
        precision=precision,
        device=config.model.device,
        view=config.model.view,
    )


def format_reports(reports: Sequence[PrecisionReport]) -> str:
    lines = ["precision  images  images/s  decisions changed vs fp32"]
    lines += [
        f"{r.precision:<9}  {r.images:>6}  {r.images_per_second:>8.1f}  {r.changed}"
        for r in reports
    ]
    return "\n".join(lines)
