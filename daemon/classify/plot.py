"""Draws the notebook's probability bar chart for one classified image."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # stations have no display; must precede pyplot's import

import matplotlib.pyplot as plt


def plot_probabilities(
    probabilities: dict[str, float], *, title: str, target_labels: frozenset[str], out: Path
) -> Path:
    """Write a horizontal bar chart, highest probability on top; target labels drawn in orange."""
    ranked = sorted(probabilities.items(), key=lambda item: item[1])
    labels = [label for label, _ in ranked]
    values = [value for _, value in ranked]
    colours = ["tab:orange" if label in target_labels else "tab:blue" for label in labels]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    try:
        axes.barh(labels, values, color=colours)
        axes.set_xlim(0, 1)
        axes.set_xlabel("probability")
        axes.set_title(title, fontsize=9)
        for y, value in enumerate(values):
            axes.text(min(value + 0.01, 0.9), y, f"{value:.3f}", va="center", fontsize=8)
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, format="png", dpi=100)
    finally:
        plt.close(figure)
    return out
