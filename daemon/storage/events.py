"""Events: a classified frame joins (or starts, or bridges) the burst of its deployment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from daemon.outcomes import Decision
from daemon.storage.schema import Event, Image, ImageDecision, ImageState, utcnow

_RANK = {Decision.NEGATIVE: 0, Decision.UNCERTAIN: 1, Decision.POSITIVE: 2}


@dataclass(frozen=True)
class Clock:
    """One deployment's camera clock: its error, and the UTC offset it keeps (None: unknown)."""

    offset_seconds: float = 0.0
    utc_offset: timedelta | None = None


@dataclass(frozen=True)
class EventSettings:
    gap_seconds: float = 60.0
    clocks: Mapping[str, Clock] = field(default_factory=dict)  # by deployment id


def higher(first: Decision, second: Decision) -> Decision:
    """The decision that sends a frame further up: positive over uncertain over negative."""
    return first if _RANK[first] >= _RANK[second] else second


def assign_event(
    session: Session, image: Image, decision: Decision, score: float, settings: EventSettings
) -> Event:
    """Put a just-classified image into its event, merging the events it bridges.

    The image's own decision is lifted to the event's, and so is every other frame of the
    event whose destination is not chosen yet; frames already filed lower are left to the
    filing pass (`refile_pending`), which moves them durably.
    """
    corrected = _correct(image, settings)
    near = _events_near(session, image.deployment, corrected, settings.gap_seconds)
    event = _merged(session, near) if near else _new_event(session, image.deployment)
    event.start_time = _earliest(event.start_time, corrected)
    event.end_time = _latest(event.end_time, corrected)
    event.frame_count += 1
    event.max_target_score = max(event.max_target_score, score)
    event.decision = higher(event.decision, decision)
    event.updated_at = utcnow()
    # Frames filed before this one may have to follow it to the event's folder; a frame that
    # starts its event has none, and is filed there directly (no filing pass, no commit).
    if event.decision is not Decision.NEGATIVE and event.frame_count > 1:
        event.refile_pending += 1
    image.event_id = event.id
    session.flush()
    if event.frame_count > 1:  # alone, the frame's decision is the event's: nothing to lift
        _lift_unrouted(session, event)
    return event


def _correct(image: Image, settings: EventSettings) -> datetime | None:
    clock = settings.clocks.get(image.deployment or "", Clock())
    if image.capture_time is None:
        image.capture_time_corrected = image.capture_time_utc = None
        return None
    corrected = image.capture_time + timedelta(seconds=clock.offset_seconds)
    image.capture_time_corrected = corrected
    if clock.utc_offset is not None:
        image.capture_time_utc = (corrected - clock.utc_offset).replace(tzinfo=UTC)
    return corrected


def _events_near(
    session: Session, deployment: str | None, at: datetime | None, gap_seconds: float
) -> list[Event]:
    """Events of this deployment within the gap of `at`; a frame without a time joins none."""
    if at is None:
        return []
    gap = timedelta(seconds=gap_seconds)
    same_deployment = (
        Event.deployment.is_(None) if deployment is None else Event.deployment == deployment
    )
    query = (
        select(Event)
        .where(same_deployment, Event.start_time <= at + gap, Event.end_time >= at - gap)
        .order_by(Event.id)
    )
    return list(session.scalars(query))


def _new_event(session: Session, deployment: str | None) -> Event:
    event = Event(
        deployment=deployment,
        frame_count=0,
        max_target_score=0.0,
        decision=Decision.NEGATIVE,
        refile_pending=0,
    )
    session.add(event)
    session.flush()  # its id names the frames' folder
    return event


def _merged(session: Session, events: list[Event]) -> Event:
    """The oldest event takes the frames of the others, which are deleted."""
    survivor, absorbed = events[0], events[1:]
    for other in absorbed:
        session.execute(
            update(Image).where(Image.event_id == other.id).values(event_id=survivor.id)
        )
        survivor.start_time = _earliest(survivor.start_time, other.start_time)
        survivor.end_time = _latest(survivor.end_time, other.end_time)
        survivor.frame_count += other.frame_count
        survivor.max_target_score = max(survivor.max_target_score, other.max_target_score)
        survivor.decision = higher(survivor.decision, other.decision)
        survivor.refile_pending += 1  # its frames' folder named the absorbed event
        session.execute(delete(Event).where(Event.id == other.id))
    return survivor


def _lift_unrouted(session: Session, event: Event) -> None:
    """Frames whose destination is not recorded yet go where the event goes."""
    lower = [d.value for d in Decision if _RANK[d] < _RANK[event.decision]]
    if not lower:
        return
    session.execute(
        update(Image)
        .where(
            Image.event_id == event.id,
            Image.state == ImageState.ROUTING,
            Image.intended_path.is_(None),
            Image.decision.in_([ImageDecision(value) for value in lower]),
        )
        .values(decision=ImageDecision(event.decision.value), route_reason=event_reason(event))
        .execution_options(synchronize_session="fetch")
    )


def event_reason(event: Event) -> str:
    """Why a frame of this event is filed with the event rather than by its own score."""
    where = event.deployment or "no deployment"
    return (
        f"event {event.id} ({where}, {event.frame_count} frames) is {event.decision}: "
        f"its best frame scored {event.max_target_score:.3f}"
    )


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    return min((t for t in (first, second) if t is not None), default=None)


def _latest(first: datetime | None, second: datetime | None) -> datetime | None:
    return max((t for t in (first, second) if t is not None), default=None)
