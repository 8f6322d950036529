"""Precision and recall from judged scores, with 95% Wilson intervals; pure arithmetic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# A figure from fewer judged frames than this is not shown: its interval would span most of [0, 1].
MIN_FOR_FIGURE = 5


@dataclass(frozen=True)
class Proportion:
    """`hits` out of `total`, with its 95% Wilson score interval; None when too few to say."""

    hits: int
    total: int

    @property
    def enough(self) -> bool:
        return self.total >= MIN_FOR_FIGURE

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.hits, self.total) if self.total else None

    def as_dict(self) -> dict[str, object]:
        low_high = self.interval
        return {
            "hits": self.hits,
            "total": self.total,
            "value": self.value,
            "low": low_high[0] if low_high else None,
            "high": low_high[1] if low_high else None,
            "enough": self.enough,
        }


def wilson_interval(hits: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (sound near 0 and 1, unlike Wald's)."""
    if total <= 0:
        raise ValueError("a proportion needs at least one trial")
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Confusion:
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int

    @property
    def precision(self) -> Proportion:
        return Proportion(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> Proportion:
        return Proportion(self.true_positives, self.true_positives + self.false_negatives)


def confusion(scores: Sequence[float], tigers: Sequence[bool], threshold: float) -> Confusion:
    """Counts when a frame scoring `threshold` or more counts as flagged (bounds are inclusive)."""
    flagged = [score >= threshold for score in scores]
    pairs = list(zip(flagged, tigers, strict=True))
    return Confusion(
        true_positives=sum(f and t for f, t in pairs),
        false_positives=sum(f and not t for f, t in pairs),
        false_negatives=sum(t and not f for f, t in pairs),
        true_negatives=sum(not f and not t for f, t in pairs),
    )


def pr_curve(scores: Sequence[float], tigers: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) at every distinct score, highest threshold first."""
    points = []
    for threshold in sorted(set(scores), reverse=True):
        counts = confusion(scores, tigers, threshold)
        precision, recall = counts.precision.value, counts.recall.value
        if precision is not None and recall is not None:
            points.append((threshold, precision, recall))
    return points


def precision_at_recall(
    scores: Sequence[float], tigers: Sequence[bool], target_recall: float
) -> tuple[float, float]:
    """(threshold, precision) with the best precision among thresholds reaching the recall."""
    best: tuple[float, float] | None = None
    for threshold in sorted({s for s, t in zip(scores, tigers, strict=True) if t}, reverse=True):
        counts = confusion(scores, tigers, threshold)
        if (counts.recall.value or 0.0) + 1e-12 >= target_recall:
            precision = counts.precision.value or 0.0
            if best is None or precision > best[1]:
                best = (threshold, precision)
    if best is None:
        raise ValueError("no judged tiger: no recall can be reached")
    return best
