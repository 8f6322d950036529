"""`tigerwatch rescore --apply`: record the new decisions, then move the frames, durably."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import filing_folder
from daemon.delivery.permissions import Ownership
from daemon.delivery.refile import RefileRequest, refile, settle_refiles
from daemon.outcomes import destination_for
from daemon.staff.rescore import Move, RescorePlan
from daemon.storage.rescores import RescoreEvent, Rescores
from daemon.storage.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What `--apply` did beyond the plan's figures."""

    settled: int  # refiles a crash had left open, finished first
    moved: int
    not_where_filed: int  # staff moved or replaced the file: left alone, recorded, reported
    failed: int  # a destination refused the file: it stays where it was; run --apply again

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def apply_rescore(
    plan: RescorePlan,
    rescores: Rescores,
    store: Store,
    paths: Paths,
    ownership: Ownership,
) -> Applied:
    """Record the plan's decisions and events in one transaction, then refile each frame.

    The caller holds the database's instance lock: no daemon files or moves frames meanwhile.
    A crash leaves the decisions recorded and some frames where they were; the next run finds
    those frames' destination still changed and moves them (an interrupted move is settled
    first, as at the daemon's start).
    """
    settled = settle_refiles(store, paths, ownership)
    rescores.record(plan.redecided, plan.events)
    events = rescores.events(sorted({m.frame.event_id for m in plan.moves if m.frame.event_id}))
    moved = not_where = failed = 0
    for move in plan.moves:
        request = _request(move, paths, events)
        try:
            new_path = refile(store, paths, request, ownership)
        except OSError as err:
            logger.error("%s: not moved to %s: %s", request.current, request.folder, err)
            failed += 1
            continue
        if new_path is None:
            not_where += 1
        else:
            moved += 1
    return Applied(settled, moved, not_where, failed)


def _request(move: Move, paths: Paths, events: dict[int, RescoreEvent]) -> RefileRequest:
    frame = move.frame
    event = events.get(frame.event_id) if frame.event_id is not None else None
    folder = filing_folder(
        paths,
        destination_for(move.decision),
        capture_time=frame.capture_time,
        arrived=frame.arrived_at,
        deployment=frame.deployment,
        event_id=None if event is None else event.id,
        event_start=None if event is None else event.start_time,
    )
    assert frame.final_path is not None  # only filed frames are moved
    current = Path(frame.final_path)
    return RefileRequest(frame.image_id, frame.sha256, current, folder, move.decision, move.reason)
