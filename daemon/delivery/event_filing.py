"""Event-level routing: every frame of an event goes where its best frame sends it, together."""

from __future__ import annotations

import logging
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import filing_folder
from daemon.delivery.permissions import Ownership
from daemon.delivery.refile import RefileRequest, refile
from daemon.outcomes import destination_for
from daemon.storage.refiles import EventToFile, FiledFrame
from daemon.storage.schema import ImageDecision
from daemon.storage.store import Store

logger = logging.getLogger(__name__)

# Frames whose file no destination holds for them: nothing to move.
_NOT_FILED = frozenset({ImageDecision.QUARANTINED, ImageDecision.VANISHED})


class EventFiler:
    """Moves frames filed before their event changed (a positive frame arrived later, two
    events merged) into the event's folder; the store flags the events that changed."""

    def __init__(self, store: Store, paths: Paths, ownership: Ownership | None = None) -> None:
        self._store = store
        self._paths = paths
        self._ownership = ownership or Ownership()

    def file_events(self) -> int:
        """File every changed event; returns how many wait (a destination refused a move)."""
        events = self._store.events_to_file()
        for index, event in enumerate(events):
            try:
                complete = self._file(event)
            except OSError as err:
                waiting = len(events) - index
                logger.error("event %d: frames cannot move now, will retry: %s", event.id, err)
                return waiting
            if complete:
                self._store.event_filed(event)
        return 0

    def _file(self, event: EventToFile) -> bool:
        """Refile the event's misplaced frames; False while a frame is still on its way."""
        complete = True
        for frame in event.frames:
            if frame.decision in _NOT_FILED:
                continue
            if not frame.done:
                complete = False  # the router files it; looked at again next round
                continue
            if frame.final_path is None or frame.judged:
                continue  # a judged frame lies where staff put it (a verdict folder, say)
            folder = self._folder(event, frame)
            current = Path(frame.final_path)
            if current.parent != folder:
                request = RefileRequest(
                    frame.image_id, frame.sha256, current, folder, event.decision, event.reason
                )
                refile(self._store, self._paths, request, self._ownership)
        return complete

    def _folder(self, event: EventToFile, frame: FiledFrame) -> Path:
        return filing_folder(
            self._paths,
            destination_for(event.decision),
            capture_time=frame.capture_time,
            arrived=frame.arrived_at,
            deployment=event.deployment,
            event_id=event.id,
            event_start=event.start_time,
        )
