"""Thresholds for `tigerwatch calibrate`: target recall at best precision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.staff.evaluate import SPLIT_NAMES, TooFewVerdicts
from daemon.staff.metrics import confusion
from daemon.storage.staff import ScoredFrame

DECIMALS = 4  # thresholds are printed rounded down to this, so the recall is still reached
LIGHT_COLUMN = "infrared"


@dataclass(frozen=True)
class Calibration:
    name: str
    threshold: float  # the new uncertain_threshold: frames at or above it reach staff
    recall: float
    precision: float
    tigers: int
    not_tigers: int
    frames_per_day: float  # frames at or above the threshold, per day of arrivals


def calibrate(
    frames: Sequence[ScoredFrame], target_recall: float, min_verdicts: int, name: str = "all frames"
) -> Calibration:
    """The threshold reaching `target_recall` with the best precision (ties: the higher one)."""
    judged = [frame for frame in frames if frame.is_tiger is not None]
    tigers = [frame.score for frame in judged if frame.is_tiger]
    others = [frame.score for frame in judged if not frame.is_tiger]
    if len(tigers) < min_verdicts or len(others) < min_verdicts:
        raise TooFewVerdicts(
            f"{name}: {len(tigers)} frames judged tiger and {len(others)} judged not tiger; "
            f"calibration needs at least {min_verdicts} of each (--min-verdicts)"
        )
    scores = [frame.score for frame in judged]
    labels = [bool(frame.is_tiger) for frame in judged]
    best: tuple[float, float, float] | None = None  # (precision, threshold, recall)
    for candidate in sorted(set(tigers), reverse=True):
        threshold = math.floor(candidate * 10**DECIMALS) / 10**DECIMALS
        counts = confusion(scores, labels, threshold)
        recall, precision = counts.recall.value or 0.0, counts.precision.value or 0.0
        if recall + 1e-12 >= target_recall and (best is None or precision > best[0]):
            best = (precision, threshold, recall)
    assert best is not None  # the lowest tiger score always reaches recall 1
    precision, threshold, recall = best
    return Calibration(
        name,
        threshold,
        recall,
        precision,
        len(tigers),
        len(others),
        frames_per_day(frames, threshold),
    )


def frames_per_day(frames: Sequence[ScoredFrame], threshold: float) -> float:
    """How many frames a day reach staff at `threshold`, over the days frames arrived."""
    if not frames:
        return 0.0
    seen = [frame.first_seen_at for frame in frames]
    days = max(1.0, (max(seen) - min(seen)).total_seconds() / 86400)
    return sum(frame.score >= threshold for frame in frames) / days


def calibrate_per_light(
    frames: Sequence[ScoredFrame], target_recall: float, min_verdicts: int
) -> list[Calibration | str]:
    """Per infrared/colour (when the images.infrared column exists): a calibration or why not."""
    results: list[Calibration | str] = []
    for value in sorted({frame.splits.get(LIGHT_COLUMN) for frame in frames}, key=str):
        name = SPLIT_NAMES[LIGHT_COLUMN].get(value, f"{LIGHT_COLUMN}={value}")
        members = [frame for frame in frames if frame.splits.get(LIGHT_COLUMN) == value]
        try:
            results.append(calibrate(members, target_recall, min_verdicts, name))
        except TooFewVerdicts as err:
            results.append(str(err))
    return results


def config_snippet(
    overall: Calibration, positive: float, per_light: Sequence[Calibration | str] = ()
) -> str:
    lines = [
        "decision:",
        f"  positive_threshold: {max(positive, overall.threshold):g}",
        f"  uncertain_threshold: {overall.threshold:g}",
        f"# expected: recall {overall.recall:.3f} and precision {overall.precision:.3f} on "
        f"{overall.tigers} tiger / {overall.not_tigers} not-tiger verdicts;",
        f"# about {overall.frames_per_day:.1f} frames a day to review (review + uncertain)",
    ]
    for light in per_light:
        if isinstance(light, str):
            lines.append(f"# {light}")
        else:
            lines.append(
                f"# {light.name} alone: uncertain_threshold {light.threshold:g}, precision "
                f"{light.precision:.3f}, {light.frames_per_day:.1f} frames a day"
            )
    return "\n".join(lines)
