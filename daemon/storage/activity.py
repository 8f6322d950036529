"""Recent activity for `tigerwatch status`: the backlog's drain, what waits, the last error."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from daemon.storage.schema import Duplicate, Image, ImageState, MoveState, Reject


def is_open(model: type[Image] | type[Duplicate] | type[Reject]) -> ColumnElement[bool]:
    """The entry has not left the inbox yet.

    Named as the open states rather than `state != 'done'`: an inequality cannot use the state
    index, so at a million done images it read every row.
    """
    if model is Image:
        return Image.state.in_([ImageState.QUEUED, ImageState.ROUTING])
    return model.state == MoveState.ROUTING


@dataclass(frozen=True)
class LastError:
    at: datetime
    path: str
    reason: str


class Activity:
    """The Store's part that reads recent activity (a mixin of Store)."""

    _reading: Callable[[], AbstractContextManager[Session]]

    def counts_by_state(self) -> dict[str, int]:
        """Images per state. The few open ones are counted through the state index and `done`
        is the rest: grouping a million done rows by state cost four times one plain count."""
        with self._reading() as session:
            rows = session.execute(
                select(Image.state, func.count()).where(is_open(Image)).group_by(Image.state)
            ).all()
            total = session.scalar(select(func.count()).select_from(Image)) or 0
        counts = {str(state): count for state, count in rows}
        done = total - sum(counts.values())
        return counts | ({ImageState.DONE.value: done} if done else {})

    def finished_since(self, since: datetime) -> int:
        """Entries (images, duplicates, rejects) that left the inbox since `since`."""
        with self._reading() as session:
            return sum(
                session.scalar(select(func.count()).where(model.done_at >= since)) or 0
                for model in (Image, Duplicate, Reject)
            )

    def first_finished_since(self, since: datetime) -> datetime | None:
        """When the first entry to leave the inbox since `since` left; None if none did."""
        with self._reading() as session:
            found = [
                session.scalar(select(func.min(model.done_at)).where(model.done_at >= since))
                for model in (Image, Duplicate, Reject)
            ]
        return min((moment for moment in found if moment is not None), default=None)

    def waiting_paths(self) -> list[str]:
        """Inbox paths of every entry not yet out of the inbox."""
        with self._reading() as session:
            images = session.scalars(select(Image.original_path).where(is_open(Image)))
            paths = list(images)
            for model in (Duplicate, Reject):
                paths += session.scalars(select(model.source_path).where(is_open(model)))
        return paths

    def last_error(self) -> LastError | None:
        """The latest file-level error: an image's last error or a rejected entry's reason.

        An image's error counts from when it was done, or else from when it arrived; the two
        cases are asked apart so each reads the partial index of rows with an error
        (ix_images_error_done_at) instead of every image.
        """
        failed = Image.last_error.is_not(None)
        with self._reading() as session:
            rows = [
                session.execute(
                    select(when, Image.original_path, Image.last_error)
                    .where(failed, condition)
                    .order_by(when.desc())
                    .limit(1)
                ).first()
                for when, condition in (
                    (Image.done_at, Image.done_at.is_not(None)),
                    (Image.first_seen_at, Image.done_at.is_(None)),
                )
            ]
            rows.append(
                session.execute(
                    select(Reject.arrived_at, Reject.source_path, Reject.reason)
                    .order_by(Reject.arrived_at.desc())
                    .limit(1)
                ).first()
            )
        found = [
            LastError(row[0], row[1], str(row[2]))
            for row in rows
            if row is not None and row[0] is not None
        ]
        return max(found, key=lambda error: error.at, default=None)
