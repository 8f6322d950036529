"""Growth: where the daemon files a generated frame, and the events and refiles rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.growth_plan import DECISIONS, Plan, deployment_name
from daemon.delivery.refile import NOT_WHERE_FILED
from daemon.outcomes import Decision
from daemon.storage.events import event_reason
from daemon.storage.schema import Event

ROOTS = {"positive": "review", "uncertain": "review/uncertain", "negative": "archive"}
EVENT_COLUMNS = (
    "id, deployment, start_time, end_time, frame_count, max_target_score, decision, "
    "refile_pending, updated_at"
)
REFILE_COLUMNS = (
    "image_id, reason, decision, source_path, intended_path, final_path, note, state, "
    "created_at, done_at"
)
PROMOTED_EVERY = 3  # of the events whose first frame was filed lower before the event rose
NOT_MOVED_EVERY = 20  # of those promotions: staff had moved the frame, so it stayed


def stamp(moment: datetime) -> str:
    """SQLAlchemy's SQLite DateTime text for a UTC moment: naive, always with microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def naive(moment: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DateTime text for a naive (camera-local) time."""
    return None if moment is None else moment.isoformat(" ", "microseconds")


@dataclass(frozen=True)
class Frame:
    """One classified frame as the filing sees it."""

    index: int
    name: str
    deployment: str | None
    captured: datetime | None  # corrected, camera-local
    arrived: datetime  # UTC
    event_id: int
    event_start: datetime | None


def filing_folder(root: Path, decision: str, frame: Frame) -> Path:
    """daemon/delivery/destinations.py's filing_folder, on plain strings (a test compares)."""
    base = root / ROOTS[decision]
    if frame.deployment is None:
        return base / day_folder(frame.captured, frame.arrived)
    if decision == "negative":
        return base / day_folder(frame.captured, frame.arrived) / frame.deployment
    start = frame.event_start if frame.event_start is not None else frame.captured
    return base / day_folder(start, frame.arrived) / frame.deployment / f"event-{frame.event_id}"


def day_folder(captured: datetime | None, arrived: datetime) -> str:
    day = captured.date() if captured is not None else arrived.astimezone().date()
    return day.isoformat()


class EventBook:
    """The events of a plan: each frame's filed decision and reason, and the table rows."""

    def __init__(self, plan: Plan, origin: datetime) -> None:
        self.plan = plan
        self.origin = origin  # corrected capture time of plan offset 0
        self._reasons: dict[int, str] = {}

    def decision(self, event_id: int) -> str:
        return DECISIONS[int(self.plan.events.decision[event_id - 1])]

    def start(self, event_id: int) -> datetime | None:
        return self._at(float(self.plan.events.start[event_id - 1]))

    def reason(self, event_id: int) -> str:
        """Why a frame went where its event sent it, as the daemon words it."""
        if event_id not in self._reasons:
            events = self.plan.events
            event = Event(
                id=event_id,
                deployment=deployment_name(int(events.deployment[event_id - 1])),
                frame_count=int(events.frame_count[event_id - 1]),
                max_target_score=float(events.max_score[event_id - 1]),
                decision=Decision(self.decision(event_id)),
            )
            self._reasons[event_id] = event_reason(event)
        return self._reasons[event_id]

    def promoted(self, frame: Frame, done: bool) -> bool:
        """Whether this frame was filed by its own decision before its event rose (a refile)."""
        own = int(self.plan.decision[frame.index])
        event = int(self.plan.events.decision[frame.event_id - 1])
        return (
            done
            and own < event
            and int(self.plan.position[frame.index]) == 0
            and frame.event_id % PROMOTED_EVERY == 0
        )

    def left_alone(self, frame: Frame) -> bool:
        """A promotion that found the frame moved by staff: it stays where it was filed."""
        return frame.event_id % (PROMOTED_EVERY * NOT_MOVED_EVERY) == 0

    def refile_row(
        self, frame: Frame, root: Path, image_id: int, done_at: datetime
    ) -> tuple[object, ...]:
        own = DECISIONS[int(self.plan.decision[frame.index])]
        event = self.decision(frame.event_id)
        source = filing_folder(root, own, frame) / frame.name
        intended = filing_folder(root, event, frame) / frame.name
        alone = self.left_alone(frame)
        return (
            image_id,
            self.reason(frame.event_id),
            event,
            str(source),
            str(intended),
            None if alone else str(intended),
            NOT_WHERE_FILED if alone else None,
            "done",
            stamp(done_at + timedelta(seconds=30)),
            stamp(done_at + timedelta(seconds=31)),
        )

    def rows(
        self, classified_at: Callable[[int], datetime], pending: dict[int, int]
    ) -> Iterator[tuple[object, ...]]:
        """The events table; `classified_at`: when a frame (by index) was classified, which
        the event's updated_at follows; `pending`: refile_pending of events still filing."""
        events = self.plan.events
        for slot in range(len(events.frame_count)):
            event_id = slot + 1
            yield (
                event_id,
                deployment_name(int(events.deployment[slot])),
                naive(self._at(float(events.start[slot]))),
                naive(self._at(float(events.end[slot]))),
                int(events.frame_count[slot]),
                float(events.max_score[slot]),
                self.decision(event_id),
                pending.get(event_id, 0),
                stamp(classified_at(int(events.last_frame[slot]))),
            )

    def _at(self, seconds: float) -> datetime | None:
        return None if np.isnan(seconds) else self.origin + timedelta(seconds=seconds)


def pending_refiles(plan: Plan, open_frames: range) -> dict[int, int]:
    """refile_pending of the events with frames not filed yet: the daemon adds one for each
    frame assigned while the event's decision was above negative, and clears it once filed."""
    open_events = {int(plan.event[index]) for index in open_frames} - {0}
    pending = {}
    for event_id in sorted(open_events):
        frames = np.flatnonzero(plan.event[: open_frames.stop] == event_id)
        rising = np.maximum.accumulate(plan.decision[frames])
        pending[event_id] = int(np.count_nonzero(rising > 0))
    return {event_id: count for event_id, count in pending.items() if count}
