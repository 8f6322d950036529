"""Turns a target score into the station's decision: positive, uncertain or negative."""

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
