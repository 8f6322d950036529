"""Figures for `tigerwatch evaluate`: precision and recall per group, tigers left in the archive."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.staff.metrics import Proportion, confusion, wilson_interval
from daemon.storage.staff import AuditFrame, ScoredFrame

# A split column that groups frames into events rather than splitting them (see OPTIONAL_SPLITS).
EVENT_COLUMN = "event_id"
SPLIT_NAMES: dict[str, dict[object, str]] = {"infrared": {0: "colour", 1: "infrared"}}  # True == 1


class TooFewVerdicts(Exception):  # noqa: N818 (read as a message, not as a fault)
    """Not enough judged frames for any figure; the message says how many there are."""


@dataclass(frozen=True)
class GroupFigures:
    """Precision and recall of one group of judged frames (or events) at both thresholds."""

    name: str
    tigers: int
    not_tigers: int
    review_precision: Proportion  # flagged = score >= positive_threshold
    review_recall: Proportion
    staff_precision: Proportion  # flagged = score >= uncertain_threshold (review + uncertain)
    staff_recall: Proportion

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tigers": self.tigers,
            "not_tigers": self.not_tigers,
            "review": {
                "precision": self.review_precision.as_dict(),
                "recall": self.review_recall.as_dict(),
            },
            "review_or_uncertain": {
                "precision": self.staff_precision.as_dict(),
                "recall": self.staff_recall.as_dict(),
            },
        }


@dataclass(frozen=True)
class ArchiveEstimate:
    """Tiger frames estimated to sit unseen in the audited folders, from the latest audit batch."""

    batch: str
    judged: int
    sampled: int
    population: int
    tigers_found: int
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def group_figures(
    name: str, judged: Sequence[tuple[float, bool]], positive: float, uncertain: float
) -> GroupFigures:
    scores = [score for score, _ in judged]
    tigers = [tiger for _, tiger in judged]
    review, staff = confusion(scores, tigers, positive), confusion(scores, tigers, uncertain)
    return GroupFigures(
        name=name,
        tigers=sum(tigers),
        not_tigers=len(tigers) - sum(tigers),
        review_precision=review.precision,
        review_recall=review.recall,
        staff_precision=staff.precision,
        staff_recall=staff.recall,
    )


def evaluate_frames(
    frames: Sequence[ScoredFrame], split_columns: Sequence[str], positive: float, uncertain: float
) -> list[GroupFigures]:
    """Figures for all judged frames, then per value of each split column, then per event."""
    judged = [frame for frame in frames if frame.is_tiger is not None]
    if not judged:
        raise TooFewVerdicts("no frame has a staff verdict yet: see README, 'Staff workflow'")
    groups = [group_figures("all frames", _pairs(judged), positive, uncertain)]
    for column in split_columns:
        if column == EVENT_COLUMN:
            continue
        by_value: dict[object, list[ScoredFrame]] = defaultdict(list)
        for frame in judged:
            by_value[frame.splits.get(column)].append(frame)
        if len(by_value) < 2:
            continue  # one value (say, no deployments at all) would only repeat "all frames"
        for value, members in sorted(by_value.items(), key=lambda item: str(item[0])):
            label = SPLIT_NAMES.get(column, {}).get(value, f"{column}={value}")
            groups.append(group_figures(label, _pairs(members), positive, uncertain))
    if EVENT_COLUMN in split_columns:
        groups.append(group_figures("events", event_pairs(frames), positive, uncertain))
    return groups


def _pairs(frames: Sequence[ScoredFrame]) -> list[tuple[float, bool]]:
    return [(frame.score, bool(frame.is_tiger)) for frame in frames]


def event_pairs(frames: Sequence[ScoredFrame]) -> list[tuple[float, bool]]:
    """One (best frame's score, any frame judged tiger) per event with a judged frame."""
    scores: dict[object, float] = {}
    verdicts: dict[object, list[bool]] = defaultdict(list)
    for frame in frames:
        event = frame.splits.get(EVENT_COLUMN)
        if event is None:
            continue
        scores[event] = max(scores.get(event, 0.0), frame.score)
        if frame.is_tiger is not None:
            verdicts[event].append(frame.is_tiger)
    return [(scores[event], any(judged)) for event, judged in verdicts.items()]


def archive_estimate(audited: Sequence[AuditFrame]) -> ArchiveEstimate | None:
    """Scale the tigers found among the latest batch's judged samples up to each stratum."""
    if not audited:
        return None
    batch = max(frame.batch for frame in audited)
    latest = [frame for frame in audited if frame.batch == batch]
    estimate = low = high = 0.0
    population = judged_count = found = 0
    for stratum in sorted({frame.stratum for frame in latest}):
        members = [frame for frame in latest if frame.stratum == stratum]
        judged = [frame for frame in members if frame.is_tiger is not None]
        size = members[0].population
        population += size
        if not judged:
            high += size  # nothing judged: anything from none to all could be a tiger
            continue
        tigers = sum(bool(frame.is_tiger) for frame in judged)
        share_low, share_high = wilson_interval(tigers, len(judged))
        estimate += size * tigers / len(judged)
        low, high = low + size * share_low, high + size * share_high
        judged_count, found = judged_count + len(judged), found + tigers
    return ArchiveEstimate(batch, judged_count, len(latest), population, found, estimate, low, high)
