"""The outcome vocabulary: a target score's decision, and the destination each outcome goes to."""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    POSITIVE = "positive"
    UNCERTAIN = "uncertain"
    NEGATIVE = "negative"


def decide(
    target_score: float, *, positive_threshold: float, uncertain_threshold: float
) -> Decision:
    """Both thresholds are inclusive lower bounds, so a score exactly on one counts upwards."""
    if target_score >= positive_threshold:
        return Decision.POSITIVE
    if target_score >= uncertain_threshold:
        return Decision.UNCERTAIN
    return Decision.NEGATIVE


class Destination(StrEnum):
    REVIEW = "review"
    UNCERTAIN = "uncertain"
    ARCHIVE = "archive"
    DUPLICATES = "duplicates"
    QUARANTINE = "quarantine"


_BY_DECISION = {
    Decision.POSITIVE: Destination.REVIEW,
    Decision.UNCERTAIN: Destination.UNCERTAIN,
    Decision.NEGATIVE: Destination.ARCHIVE,
}


def destination_for(decision: Decision) -> Destination:
    return _BY_DECISION[decision]
