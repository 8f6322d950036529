"""Refiles: moves of frames already filed (event promotion), and the events still to file."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from daemon.outcomes import Decision
from daemon.storage.events import event_reason
from daemon.storage.schema import Event, Image, ImageDecision, MoveState, Refile, Verdict, utcnow


@dataclass(frozen=True)
class RefileIntent:
    """An already-filed frame to move: from where, to where, with which decision, and why."""

    image_id: int
    sha256: str
    source_path: str
    intended_path: str
    decision: Decision  # the decision whose destination it moves to
    reason: str


@dataclass(frozen=True)
class OpenRefile:
    """A refile recorded as intended and not recorded as finished (a crash in between)."""

    id: int
    intent: RefileIntent


@dataclass(frozen=True)
class FiledFrame:
    """One frame of an event, as far as filing it goes."""

    image_id: int
    sha256: str
    done: bool  # its row is closed (moved out of the inbox, or given up)
    judged: bool  # carries a staff verdict: staff decide where it lies, never the filing
    decision: ImageDecision | None
    final_path: str | None
    capture_time: datetime | None  # corrected
    arrived_at: datetime


@dataclass(frozen=True)
class EventToFile:
    id: int
    deployment: str | None
    start_time: datetime | None
    decision: Decision
    reason: str
    seen: int  # refile_pending as read: cleared only if still this value
    frames: tuple[FiledFrame, ...]


class Refiles:
    """The Store's part that records refiles and lists events to file (a mixin of Store)."""

    _writing: Callable[[], AbstractContextManager[Session]]
    _reading: Callable[[], AbstractContextManager[Session]]

    def record_refile_intent(self, intent: RefileIntent) -> int:
        """Record where a filed frame is about to go, before anything is touched."""
        with self._writing() as session:
            row = _refile_row(intent, MoveState.ROUTING)
            session.add(row)
            session.flush()
            return row.id

    def record_refile_target(self, refile_id: int, intended_path: str) -> None:
        """A new intended name, when the one recorded was taken meanwhile."""
        with self._writing() as session:
            session.get_one(Refile, refile_id).intended_path = intended_path

    def record_refiled(self, refile_id: int, final_path: str) -> None:
        """The frame is at its new place: the image row follows it, with the reason."""
        with self._writing() as session:
            refile = session.get_one(Refile, refile_id)
            refile.state, refile.final_path, refile.done_at = MoveState.DONE, final_path, utcnow()
            image = session.get_one(Image, refile.image_id)
            image.final_path = final_path
            image.decision = ImageDecision(refile.decision.value)
            image.route_reason = refile.reason

    def record_not_refiled(self, intent: RefileIntent, note: str, refile_id: int | None) -> None:
        """The frame was not moved (staff moved or changed it): say why, keep the image row."""
        with self._writing() as session:
            row = session.get_one(Refile, refile_id) if refile_id else _refile_row(intent, None)
            row.state, row.note, row.done_at = MoveState.DONE, note, utcnow()
            session.add(row)

    def open_refiles(self) -> list[OpenRefile]:
        with self._reading() as session:
            rows = session.scalars(select(Refile).where(Refile.state == MoveState.ROUTING))
            return [OpenRefile(row.id, _intent(session, row)) for row in rows]

    def events_to_file(self) -> list[EventToFile]:
        with self._reading() as session:
            events = session.scalars(select(Event).where(Event.refile_pending > 0))
            return [_to_file(session, event) for event in events]

    def event_filed(self, event: EventToFile) -> bool:
        """Clear the event's pending changes unless a new one came in since it was read."""
        with self._writing() as session:
            cleared = session.execute(
                update(Event)
                .where(Event.id == event.id, Event.refile_pending == event.seen)
                .values(refile_pending=0)
            )
            return bool(cleared.rowcount)  # type: ignore[attr-defined]


def _refile_row(intent: RefileIntent, state: MoveState | None) -> Refile:
    return Refile(
        image_id=intent.image_id,
        reason=intent.reason,
        decision=intent.decision,
        source_path=intent.source_path,
        intended_path=intent.intended_path,
        state=state or MoveState.DONE,
    )


def _intent(session: Session, row: Refile) -> RefileIntent:
    return RefileIntent(
        image_id=row.image_id,
        sha256=session.get_one(Image, row.image_id).sha256,
        source_path=row.source_path,
        intended_path=row.intended_path,
        decision=Decision(row.decision.value),
        reason=row.reason,
    )


def _to_file(session: Session, event: Event) -> EventToFile:
    judged = select(Verdict.image_id).where(Verdict.image_id == Image.id).exists()
    rows = session.execute(
        select(Image, judged).where(Image.event_id == event.id).order_by(Image.id)
    ).all()
    frames = tuple(
        FiledFrame(
            image_id=image.id,
            sha256=image.sha256,
            done=image.state == "done",
            judged=bool(is_judged),
            decision=image.decision,
            final_path=image.final_path,
            capture_time=image.capture_time_corrected or image.capture_time,
            arrived_at=image.first_seen_at,
        )
        for image, is_judged in rows
    )
    return EventToFile(
        id=event.id,
        deployment=event.deployment,
        start_time=event.start_time,
        decision=Decision(event.decision.value),
        reason=event_reason(event),
        seen=event.refile_pending,
        frames=frames,
    )
