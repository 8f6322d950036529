"""Decide again from stored embeddings (`tigerwatch rescore`): which frames would change, how."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from daemon.cli_progress import Track, untracked
from daemon.config import Decision as Thresholds
from daemon.embeddings import from_stored
from daemon.heads import LinearHead
from daemon.outcomes import Decision, decide, destination_for
from daemon.storage.staff import StoredEmbedding

# Scores of (N, D) embeddings, each with its light: the classify layer's text embeddings.
ZeroShot = Callable[[npt.NDArray[np.float32], Sequence[bool]], list[float]]


@dataclass(frozen=True)
class RescoreReport:
    rescored: int
    transitions: dict[str, int]  # "archive -> review": frames that would move so
    judged: int  # left out: a staff verdict decides these frames, not a score
    without_embedding: int  # left out: classified before embeddings were stored
    other_model: int  # left out: embedded by another model than the configured one

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "changed": self.changed}


def rescore(
    frames: Sequence[StoredEmbedding],
    model_name: str,
    zero_shot: ZeroShot,
    thresholds: Thresholds,
    head: LinearHead | None,
    *,
    track: Track = untracked,
) -> RescoreReport:
    """Each frame's decision under the current prompts, thresholds (per light) and head."""
    usable = [f for f in frames if not f.judged and f.embedding and f.model_name == model_name]
    scores = _scores(usable, zero_shot, head)
    moves: Counter[str] = Counter()
    for frame, score in track(zip(usable, scores, strict=True), "rescore", len(usable), "frames"):
        positive, uncertain = thresholds.thresholds(infrared=frame.infrared)
        now = decide(score, positive_threshold=positive, uncertain_threshold=uncertain)
        before = Decision(frame.decision)
        if now is not before:
            moves[f"{destination_for(before)} -> {destination_for(now)}"] += 1
    unjudged = [f for f in frames if not f.judged]
    return RescoreReport(
        rescored=len(usable),
        transitions=dict(sorted(moves.items())),
        judged=len(frames) - len(unjudged),
        without_embedding=sum(1 for f in unjudged if not f.embedding),
        other_model=sum(1 for f in unjudged if f.embedding and f.model_name != model_name),
    )


def _scores(
    frames: Sequence[StoredEmbedding], zero_shot: ZeroShot, head: LinearHead | None
) -> list[float]:
    if not frames:
        return []
    vectors = np.stack([from_stored(f.embedding or b"", f.embedding_dim) for f in frames])
    if head is not None:
        return [head.score(v, infrared=f.infrared) for v, f in zip(vectors, frames, strict=True)]
    return zero_shot(vectors, [f.infrared for f in frames])


def format_report(report: RescoreReport, head: LinearHead | None) -> str:
    scorer = f"head {head.id}" if head is not None else "zero-shot prompts"
    lines = [
        f"rescored {report.rescored} frames ({scorer}): {report.changed} would change",
        *(f"  {move}: {count}" for move, count in report.transitions.items()),
        f"skipped {report.judged} frames with a staff verdict",
    ]
    if report.without_embedding:
        lines.append(f"skipped {report.without_embedding} frames without a stored embedding")
    if report.other_model:
        lines.append(f"skipped {report.other_model} frames embedded by another model")
    lines.append("nothing was changed or moved (rescore only reports; see README)")
    return "\n".join(lines)
