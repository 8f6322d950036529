"""Formats `tigerwatch evaluate` figures as text and draws its PR curve and score histograms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stations have no display; must precede pyplot's import

import matplotlib.pyplot as plt

from daemon.staff.evaluate import ArchiveEstimate, GroupFigures
from daemon.staff.metrics import MIN_FOR_FIGURE, Proportion, pr_curve


def format_proportion(name: str, figure: Proportion) -> str:
    if not figure.enough:
        return f"{name} too few verdicts ({figure.total} of {MIN_FOR_FIGURE} needed)"
    low, high = figure.interval or (0.0, 0.0)
    return f"{name} {figure.value:.3f} (95% {low:.3f}-{high:.3f}, {figure.hits}/{figure.total})"


def format_group(group: GroupFigures) -> list[str]:
    return [
        f"{group.name}: {group.tigers} judged tiger, {group.not_tigers} judged not tiger",
        "  review (>= positive_threshold):    "
        + format_proportion("precision", group.review_precision)
        + "; "
        + format_proportion("recall", group.review_recall),
        "  review + uncertain (>= uncertain): "
        + format_proportion("precision", group.staff_precision)
        + "; "
        + format_proportion("recall", group.staff_recall),
    ]


def format_estimate(estimate: ArchiveEstimate | None) -> str:
    if estimate is None:
        return (
            "archive: no audit yet (run `tigerwatch audit`); recall above counts judged frames only"
        )
    if estimate.judged == 0:
        return f"archive: audit {estimate.batch}: none of {estimate.sampled} samples judged yet"
    return (
        f"archive: about {estimate.estimate:.0f} tiger frames missed "
        f"(95% {estimate.low:.0f}-{estimate.high:.0f}) among {estimate.population} frames, "
        f"from {estimate.tigers_found} tigers in {estimate.judged} judged samples "
        f"of audit {estimate.batch}"
    )


def format_report(
    groups: Sequence[GroupFigures],
    estimate: ArchiveEstimate | None,
    thresholds: tuple[float, float],
) -> str:
    lines = [f"thresholds: positive {thresholds[0]:g}, uncertain {thresholds[1]:g}"]
    for group in groups:
        lines.extend(format_group(group))
    lines.append(format_estimate(estimate))
    return "\n".join(lines)


def plot_evaluation(
    judged: Sequence[tuple[float, bool]], thresholds: tuple[float, float], out: Path
) -> Path:
    """Precision-recall curve (left) and the score histogram of each class (right) as one PNG."""
    scores = [score for score, _ in judged]
    tigers = [tiger for _, tiger in judged]
    curve = pr_curve(scores, tigers)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    try:
        left.plot([r for _, _, r in curve], [p for _, p, _ in curve], marker=".")
        left.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
        left.set_title("precision-recall over the tiger-score threshold", fontsize=9)
        bins = [i / 20 for i in range(21)]
        right.hist([s for s, t in judged if t], bins=bins, alpha=0.6, label="judged tiger")
        right.hist([s for s, t in judged if not t], bins=bins, alpha=0.6, label="judged not tiger")
        for threshold, style in zip(thresholds, ("-", "--"), strict=True):
            right.axvline(threshold, color="black", linestyle=style, linewidth=1)
        right.set(xlabel="tiger score", ylabel="frames")
        right.legend(fontsize=8)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="png", dpi=100)
    finally:
        plt.close(figure)
    return out
