"""Stuck moves and queue progress: what cannot leave an inbox, and whether the queue moves."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.selectable import ScalarSelect

from daemon.storage.activity import is_open
from daemon.storage.schema import (
    Duplicate,
    Image,
    ImageDecision,
    Reject,
    RowKind,
    StuckMove,
)

# Each kind of row, its table and when its entry arrived.
_TABLES: tuple[
    tuple[RowKind, type[Image] | type[Duplicate] | type[Reject], InstrumentedAttribute[datetime]],
    ...,
] = (
    (RowKind.IMAGE, Image, Image.first_seen_at),
    (RowKind.DUPLICATE, Duplicate, Duplicate.arrived_at),
    (RowKind.REJECT, Reject, Reject.arrived_at),
)


@dataclass(frozen=True)
class StuckEntry:
    kind: RowKind
    row_id: int
    source_path: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class QueueProgress:
    """Open work (stuck entries not counted) against what has been finished so far."""

    pending: int
    finished: int  # rows done plus entries recorded as stuck: both are the end of a try
    oldest_pending: datetime | None
    last_finished: datetime | None


class StuckMoves:
    """The Store's part that records stuck moves and measures progress (a mixin of Store)."""

    _writing: Callable[[], AbstractContextManager[Session]]
    _reading: Callable[[], AbstractContextManager[Session]]

    def record_stuck(self, kind: RowKind, row_id: int, source_path: str, reason: str) -> bool:
        """Record (or update the reason of) a stuck entry; True when it was not stuck before."""
        with self._writing() as session:
            query = select(StuckMove).where(StuckMove.kind == kind, StuckMove.row_id == row_id)
            existing = session.scalar(query)
            if existing is not None:
                existing.reason = reason
                return False
            session.add(StuckMove(kind=kind, row_id=row_id, source_path=source_path, reason=reason))
            return True

    def stuck_moves(self) -> list[StuckEntry]:
        with self._reading() as session:
            rows = session.scalars(select(StuckMove).order_by(StuckMove.id)).all()
            return [
                StuckEntry(row.kind, row.row_id, row.source_path, row.reason, row.since)
                for row in rows
            ]

    def reroute_to_quarantine(self, image_id: int, reason: str) -> None:
        """A classified image that its destination keeps refusing goes to quarantine instead."""
        with self._writing() as session:
            image = session.get_one(Image, image_id)
            image.decision = ImageDecision.QUARANTINED
            image.last_error = reason
            image.intended_path = None

    def queue_progress(self) -> QueueProgress:
        with self._reading() as session:
            stuck = session.scalar(select(func.count()).select_from(StuckMove)) or 0
            done = open_rows = 0
            oldest: list[datetime] = []
            latest: list[datetime] = []
            for kind, model, arrived in _TABLES:
                waiting = is_open(model)
                open_now = session.scalar(select(func.count()).where(waiting)) or 0
                # Every row is open or done: one count of the table (the smallest index) and
                # one of the few open rows, instead of counting the done ones.
                done += (session.scalar(select(func.count()).select_from(model)) or 0) - open_now
                open_rows += open_now
                first = session.scalar(
                    select(func.min(arrived)).where(waiting, model.id.not_in(_stuck_ids(kind)))
                )
                oldest += [first] if first is not None else []
                last = session.scalar(select(func.max(model.done_at)))
                latest += [last] if last is not None else []
            since = session.scalar(select(func.max(StuckMove.since)))
        latest += [since] if since is not None else []
        return QueueProgress(
            pending=open_rows - stuck,
            finished=done + stuck,
            oldest_pending=min(oldest, default=None),
            last_finished=max(latest, default=None),
        )


def clear_stuck(session: Session, kind: RowKind, row_id: int) -> None:
    """Within a transaction that closes a row: it is no longer stuck."""
    session.execute(delete(StuckMove).where(StuckMove.kind == kind, StuckMove.row_id == row_id))


def clear_stuck_many(session: Session, kind: RowKind, row_ids: list[int]) -> None:
    """Within a transaction that closes rows of one kind: none of them is stuck any more."""
    session.execute(
        delete(StuckMove).where(StuckMove.kind == kind, StuckMove.row_id.in_(row_ids)),
        execution_options={"synchronize_session": False},
    )


def _stuck_ids(kind: RowKind) -> ScalarSelect[int]:
    return select(StuckMove.row_id).where(StuckMove.kind == kind).scalar_subquery()
