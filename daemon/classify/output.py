"""Formats `tigerwatch classify` results as text, JSON or bar-chart PNGs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon.classify.classifier import Classification
from daemon.classify.oneshot import FileOutcome
from daemon.config import Config


def print_text(outcomes: Sequence[FileOutcome]) -> None:
    for outcome in outcomes:
        if outcome.error is not None:
            print(f"error: {outcome.error}", file=sys.stderr)
            continue
        assert outcome.classification is not None and outcome.decision is not None
        print(outcome.path)
        ranked = sorted(outcome.classification.probabilities.items(), key=lambda item: -item[1])
        width = max(len(label) for label, _ in ranked)
        for label, probability in ranked:
            print(f"  {label:<{width}}  {probability:.3f}")
        print(f"  target score {outcome.classification.target_score:.3f}: {outcome.decision}")
        print(f"  {_views_line(outcome.classification)}")
        print(f"  {_frame_line(outcome)}")


def _views_line(classification: Classification) -> str:
    light = "infrared" if classification.infrared else "day"
    scores = ", ".join(
        f"{'*' if index == classification.view else ''}{view.target_score:.3f}"
        for index, view in enumerate(classification.views)
    )
    return f"{light} prompts; views' target scores (* chosen): {scores}"


def _frame_line(outcome: FileOutcome) -> str:
    assert outcome.classification is not None
    light = "infrared (grey)" if outcome.classification.infrared else "colour"
    top, bottom = outcome.strips
    cut = f"top {top} px, bottom {bottom} px" if top or bottom else "none"
    return f"frame: {light}; info strips cut: {cut}"


def print_json(outcomes: Sequence[FileOutcome]) -> None:
    print(json.dumps([_as_json(outcome) for outcome in outcomes], indent=2, ensure_ascii=False))


def _as_json(outcome: FileOutcome) -> dict[str, object]:
    if outcome.error is not None:
        return {"path": str(outcome.path), "error": outcome.error}
    assert outcome.classification is not None and outcome.decision is not None
    return {
        "path": str(outcome.path),
        "probabilities": outcome.classification.probabilities,
        "target_score": outcome.classification.target_score,
        "decision": str(outcome.decision),
        "infrared": outcome.classification.infrared,
        "strip_top": outcome.strips[0],
        "strip_bottom": outcome.strips[1],
        "view": outcome.classification.view,
        "views": [
            {"target_score": view.target_score, "probabilities": view.probabilities}
            for view in outcome.classification.views
        ],
    }


def write_plots(outcomes: Sequence[FileOutcome], out: Path, config: Config) -> list[Path]:
    from daemon.classify.plot import plot_probabilities
    from daemon.delivery.fileops import unique_destination

    targets = frozenset(label.name for label in config.labels if label.target)
    written: list[Path] = []
    for outcome in outcomes:
        if outcome.classification is None:
            continue
        if out.suffix.lower() == ".png":
            destination = out
        else:
            destination = unique_destination(out, f"{outcome.path.name}.png")
        score = outcome.classification.target_score
        chosen = outcome.classification.view + 1
        views = len(outcome.classification.views)
        title = (
            f"{outcome.path.name} (view {chosen}/{views}): target {score:.3f} ({outcome.decision})"
        )
        written.append(
            plot_probabilities(
                outcome.classification.probabilities,
                title=title,
                target_labels=targets,
                out=destination,
            )
        )
    return written
