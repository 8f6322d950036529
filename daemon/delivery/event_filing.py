"""Event-level routing: every frame of an event goes where its best frame sends it, together."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import filing_folder
from daemon.delivery.move_errors import Scope, classify_move_error
from daemon.delivery.move_retries import STUCK_RETRY_SECONDS, MoveRetries, Verdict
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

    def __init__(
        self,
        store: Store,
        paths: Paths,
        ownership: Ownership | None = None,
        retries: MoveRetries | None = None,
    ) -> None:
        self._store = store
        self._paths = paths
        self._ownership = ownership or Ownership()
        # A frame whose own folder will not let it go waits alone (backoff, then hourly tries).
        self._retries = retries or MoveRetries(first_delay=30.0, max_attempts=5)
        self._left_alone: dict[int, float] = {}  # image id -> monotonic time to look again

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
                complete = self._refile(request) and complete
        return complete

    def _refile(self, request: RefileRequest) -> bool:
        """Move one frame; False while it is held back because its own folder refused it.

        Only a destination that refuses files pauses the flow (the OSError goes on up); a frame
        whose folder will not let it go (staff made it immutable, another account's folder)
        waits alone, with a backoff, and its event stays flagged until it has moved.
        """
        key = ("refile", request.image_id)
        if time.monotonic() < self._left_alone.get(request.image_id, 0.0):
            return True
        if not self._retries.due(key):
            return False
        try:
            moved = refile(self._store, self._paths, request, self._ownership)
        except OSError as err:
            fault = classify_move_error(err, request.current, request.folder / request.current.name)
            if fault.scope is Scope.DESTINATION:
                raise
            what = f"cannot move {request.current} into its event's folder"
            if self._retries.failed(key, what, fault.reason) is Verdict.GIVE_UP:
                logger.error("%s: %s; tried again hourly, the rest goes on", what, fault.reason)
            return False
        if moved is None:
            # Left where staff put it (noted once by refile): looked at again only hourly, not
            # at every routing tick while another frame holds its event open.
            self._left_alone[request.image_id] = time.monotonic() + STUCK_RETRY_SECONDS
        self._retries.succeeded(key)
        return True

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
