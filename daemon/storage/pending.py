"""The moves waiting to be made: every open row's file, where it is and where it belongs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.outcomes import Decision, Destination, destination_for
from daemon.storage.schema import (
    Duplicate,
    Event,
    Image,
    ImageDecision,
    ImageState,
    MoveState,
    Reject,
    RowKind,
)


@dataclass(frozen=True)
class PendingMove:
    """A row whose file must leave the inbox: where it is, where it goes, and why."""

    kind: RowKind
    id: int
    source_path: str
    sha256: str | None
    destination: Destination
    capture_time: datetime | None  # corrected by the deployment's clock offset when known
    arrived_at: datetime
    intended_path: str | None
    reason: str | None  # written to the sidecar of a quarantined file
    deployment: str | None = None
    event_id: int | None = None
    event_start: datetime | None = None  # the event's first corrected capture time


def pending_moves(session: Session) -> list[PendingMove]:
    images = session.scalars(select(Image).where(Image.state == ImageState.ROUTING))
    moves = [_image_move(session, image) for image in images]
    duplicates = session.scalars(select(Duplicate).where(Duplicate.state == MoveState.ROUTING))
    moves += [_duplicate_move(duplicate) for duplicate in duplicates]
    rejects = session.scalars(select(Reject).where(Reject.state == MoveState.ROUTING))
    moves += [_reject_move(reject) for reject in rejects]
    return moves


def _image_move(session: Session, image: Image) -> PendingMove:
    quarantined = image.decision == ImageDecision.QUARANTINED
    destination = (
        Destination.QUARANTINE
        if quarantined or image.decision is None
        else destination_for(Decision(image.decision.value))
    )
    event = None if image.event_id is None else session.get(Event, image.event_id)
    return PendingMove(
        kind=RowKind.IMAGE,
        id=image.id,
        source_path=image.original_path,
        sha256=image.sha256,
        destination=destination,
        capture_time=image.capture_time_corrected or image.capture_time,
        arrived_at=image.first_seen_at,
        intended_path=image.intended_path,
        reason=image.last_error if quarantined else None,
        deployment=image.deployment,
        event_id=None if event is None else event.id,
        event_start=None if event is None else event.start_time,
    )


def _duplicate_move(duplicate: Duplicate) -> PendingMove:
    return PendingMove(
        kind=RowKind.DUPLICATE,
        id=duplicate.id,
        source_path=duplicate.source_path,
        sha256=duplicate.image.sha256,
        destination=Destination.DUPLICATES,
        capture_time=None,
        arrived_at=duplicate.arrived_at,
        intended_path=duplicate.intended_path,
        reason=None,
    )


def _reject_move(reject: Reject) -> PendingMove:
    return PendingMove(
        kind=RowKind.REJECT,
        id=reject.id,
        source_path=reject.source_path,
        sha256=None,
        destination=Destination.QUARANTINE,
        capture_time=None,
        arrived_at=reject.arrived_at,
        intended_path=reject.intended_path,
        reason=reject.reason,
    )
