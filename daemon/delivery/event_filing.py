"""Event-level routing: every frame of an event goes where its best frame sends it, together."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import filing_folder
from daemon.delivery.move_retries import MoveRetries, Verdict
from daemon.delivery.permissions import Ownership
from daemon.delivery.refile import RefileRequest, refile
from daemon.file_signature import Signature, file_signature
from daemon.outcomes import destination_for
from daemon.storage.refiles import EventToFile, FiledFrame
from daemon.storage.schema import ImageDecision
from daemon.storage.store import Store

logger = logging.getLogger(__name__)

# A destination that takes no files now: the flow pauses. Any other refile error is the frame's.
_DESTINATION_WIDE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOTDIR, errno.ENOTCONN}
)
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
        # Frames refile left where staff put them, by what was at their recorded path then.
        self._left_alone: dict[int, Signature | None] = {}

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
        """Move one frame; False while it is held back because it will not leave its folder.

        Only a destination that takes no files now (full, read-only, failing) pauses the flow
        (the OSError goes on up); a frame that will not let go (an immutable file or folder,
        another account's folder) waits alone with a backoff, its event flagged until it moves.
        """
        key = ("refile", request.image_id)
        left = request.image_id in self._left_alone
        if left and self._left_alone[request.image_id] == _signature(request.current):
            return True  # as staff left it: noted once, not again at every routing tick
        if not self._retries.due(key):
            return False
        try:
            moved = refile(self._store, self._paths, request, self._ownership)
        except OSError as err:
            if err.errno in _DESTINATION_WIDE:
                raise
            what = f"cannot move {request.current} into its event's folder"
            reason = f"{err.strerror or err} ({errno.errorcode.get(err.errno or 0, '?')})"
            if self._retries.failed(key, what, reason) is Verdict.GIVE_UP:
                logger.error("%s: %s; tried again hourly, the rest goes on", what, reason)
            return False
        if moved is None:  # not there, or other bytes: looked at again once that changes
            self._left_alone[request.image_id] = _signature(request.current)
        else:
            self._left_alone.pop(request.image_id, None)
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


def _signature(path: Path) -> Signature | None:
    """What is at `path` now (None: nothing): a frame put back there is looked at again."""
    return file_signature(path, follow_symlinks=False)
