"""Decide again from stored embeddings (`tigerwatch rescore`): which frames and events change."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from daemon.cli_progress import Track, untracked
from daemon.config import Decision as Thresholds
from daemon.embeddings import from_stored
from daemon.heads import LinearHead
from daemon.outcomes import Decision, decide, destination_for
from daemon.storage.events import higher
from daemon.storage.rescores import EventChange, Redecided, RescoreFrame

# Zero-shot (score, label probabilities) of (N, D) embeddings, each with its light: the
# classify layer's text embeddings of the current prompts.
ZeroShot = Callable[[npt.NDArray[np.float32], Sequence[bool]], list[tuple[float, dict[str, float]]]]


@dataclass(frozen=True)
class Scoring:
    """The current settings a frame is decided again with."""

    model_name: str
    zero_shot: ZeroShot
    thresholds: Thresholds
    head: LinearHead | None
    labels: list[dict[str, object]]  # recorded with each new decision


@dataclass(frozen=True)
class Move:
    """A filed frame whose destination changed: where it goes, and why."""

    frame: RescoreFrame
    decision: Decision  # of its new destination
    reason: str


@dataclass(frozen=True)
class RescorePlan:
    rescored: int
    redecided: list[Redecided]  # frames whose own decision changed: new classification rows
    events: list[EventChange]  # events whose decision changed
    moves: list[Move]  # filed frames whose destination changed
    transitions: dict[str, int]  # frames: "archive -> review": how many would move so
    event_transitions: dict[str, int]  # events, the same way
    judged: int  # left out: a staff verdict decides these frames, not a score
    without_embedding: int  # left out: classified before embeddings were stored
    other_model: int  # left out: embedded by another model than the configured one
    unfiled: int  # left out: still on their way out of the inbox (filed at the daemon's start)

    @property
    def changed(self) -> int:
        return sum(self.transitions.values())

    def as_dict(self) -> dict[str, object]:
        figures = {k: v for k, v in self.__dict__.items() if k not in _ROWS}
        return {**figures, "changed": self.changed, "decisions_changed": len(self.redecided)}


_ROWS = frozenset({"redecided", "events", "moves"})


@dataclass
class _After:
    """Each frame's own decision and score after rescoring (unchanged where not rescored)."""

    decision: dict[int, Decision] = field(default_factory=dict)
    score: dict[int, float] = field(default_factory=dict)


def plan_rescore(
    frames: Sequence[RescoreFrame],
    events: dict[int, Decision],
    scoring: Scoring,
    *,
    track: Track = untracked,
) -> RescorePlan:
    """Each frame's decision under the current prompts, thresholds (per light) and head; each
    event's as its best frame's; and the moves that keep every unjudged frame with its event.

    `events`: the recorded decision of each event the frames belong to.
    """
    usable = [f for f in frames if _usable(f, scoring.model_name)]
    after, redecided = _redecide(frames, usable, scoring, track)
    changes = _event_changes(frames, events, after)
    new_events = {**events, **{change.id: change.decision for change in changes}}
    moves = _moves(frames, after, new_events)
    unjudged = [f for f in frames if not f.judged]
    return RescorePlan(
        rescored=len(usable),
        redecided=redecided,
        events=changes,
        moves=moves,
        transitions=_count((m.frame.filed, m.decision) for m in moves),
        event_transitions=_count((events[c.id], c.decision) for c in changes),
        judged=len(frames) - len(unjudged),
        without_embedding=sum(1 for f in unjudged if not f.embedding),
        other_model=sum(1 for f in unjudged if f.embedding and f.model_name != scoring.model_name),
        unfiled=sum(1 for f in unjudged if not f.done),
    )


def _usable(frame: RescoreFrame, model_name: str) -> bool:
    return bool(
        frame.done and not frame.judged and frame.embedding and frame.model_name == model_name
    )


def _redecide(
    frames: Sequence[RescoreFrame],
    usable: Sequence[RescoreFrame],
    scoring: Scoring,
    track: Track,
) -> tuple[_After, list[Redecided]]:
    after = _After({f.image_id: f.own for f in frames}, {f.image_id: f.score for f in frames})
    redecided = []
    scored = zip(usable, _scores(usable, scoring), strict=True)
    for frame, (score, probabilities) in track(scored, "rescore", len(usable), "frames"):
        positive, uncertain = scoring.thresholds.thresholds(infrared=frame.infrared)
        now = decide(score, positive_threshold=positive, uncertain_threshold=uncertain)
        after.decision[frame.image_id], after.score[frame.image_id] = now, score
        if now is not frame.own:
            head_id = None if scoring.head is None else scoring.head.id
            redecided.append(
                Redecided(
                    frame.image_id,
                    frame.classification_id,
                    score,
                    now,
                    probabilities,
                    scoring.labels,
                    (positive, uncertain),
                    head_id,
                )
            )
    return after, redecided


def _scores(
    frames: Sequence[RescoreFrame], scoring: Scoring
) -> list[tuple[float, dict[str, float]]]:
    if not frames:
        return []
    vectors = np.stack([from_stored(f.embedding or b"", f.embedding_dim) for f in frames])
    zero_shot = scoring.zero_shot(vectors, [f.infrared for f in frames])
    head = scoring.head
    if head is None:
        return zero_shot
    # As the worker: the head's score decides, the prompts' probabilities are recorded.
    return [
        (head.score(vector, infrared=frame.infrared), probabilities)
        for vector, frame, (_, probabilities) in zip(vectors, frames, zero_shot, strict=True)
    ]


def _event_changes(
    frames: Sequence[RescoreFrame], events: dict[int, Decision], after: _After
) -> list[EventChange]:
    """Events whose best frame's decision is another now; judged frames count as they were."""
    best: dict[int, Decision] = {}
    top: dict[int, float] = {}
    for frame in frames:
        if frame.event_id is not None:
            event, own = frame.event_id, after.decision[frame.image_id]
            best[event] = higher(best.get(event, Decision.NEGATIVE), own)
            top[event] = max(top.get(event, 0.0), after.score[frame.image_id])
    return [
        EventChange(event, decision, top[event])
        for event, decision in sorted(best.items())
        if event in events and decision is not events[event]
    ]


def _moves(
    frames: Sequence[RescoreFrame], after: _After, events: dict[int, Decision]
) -> list[Move]:
    """Filed, unjudged frames whose destination (their event's, else their own) changed."""
    moves = []
    for frame in frames:
        if frame.judged or not frame.done or frame.final_path is None:
            continue
        own = after.decision[frame.image_id]
        event = events.get(frame.event_id) if frame.event_id is not None else None
        goes = own if event is None else event
        if goes is not frame.filed:
            reason = f"rescore: {frame.filed} -> {goes}"
            if goes is not own:
                reason += f" (its own score says {own}; event {frame.event_id} is {goes})"
            moves.append(Move(frame, goes, reason))
    return moves


def _count(transitions: Iterable[tuple[Decision, Decision]]) -> dict[str, int]:
    counted = Counter(
        f"{destination_for(before)} -> {destination_for(after)}" for before, after in transitions
    )
    return dict(sorted(counted.items()))
