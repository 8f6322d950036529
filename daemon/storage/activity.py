"""Recent activity for `tigerwatch status`: the backlog's drain, what waits, the last error."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.storage.schema import Duplicate, Image, ImageState, Reject


@dataclass(frozen=True)
class LastError:
    at: datetime
    path: str
    reason: str


class Activity:
    """The Store's part that reads recent activity (a mixin of Store)."""

    _reading: Callable[[], AbstractContextManager[Session]]

    def finished_since(self, since: datetime) -> int:
        """Entries (images, duplicates, rejects) that left the inbox since `since`."""
        with self._reading() as session:
            return sum(
                session.scalar(select(func.count()).where(model.done_at >= since)) or 0
                for model in (Image, Duplicate, Reject)
            )

    def waiting_paths(self) -> list[str]:
        """Inbox paths of every entry not yet out of the inbox."""
        done = ImageState.DONE.value
        with self._reading() as session:
            images = session.scalars(select(Image.original_path).where(Image.state != done))
            paths = list(images)
            for model in (Duplicate, Reject):
                paths += session.scalars(select(model.source_path).where(model.state != done))
        return paths

    def last_error(self) -> LastError | None:
        """The latest file-level error: an image's last error or a rejected entry's reason."""
        with self._reading() as session:
            when = func.coalesce(Image.done_at, Image.first_seen_at)
            image = session.execute(
                select(when, Image.original_path, Image.last_error)
                .where(Image.last_error.is_not(None))
                .order_by(when.desc())
                .limit(1)
            ).first()
            reject = session.execute(
                select(Reject.arrived_at, Reject.source_path, Reject.reason)
                .order_by(Reject.arrived_at.desc())
                .limit(1)
            ).first()
        found = [
            LastError(row[0], row[1], str(row[2])) for row in (image, reject) if row is not None
        ]
        return max(found, key=lambda error: error.at, default=None)
