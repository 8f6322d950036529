"""Moves a frame already filed to another destination folder: recorded, durable, never lost.

The one way a filed frame changes place: event promotion and `tigerwatch rescore --apply`
use it. Intent first (a `refiles` row with the intended path), then the move
(link or verified copy, fsynced, SHA-256 checked), then the final path and the reason on the
image; `settle_refiles` finishes at start-up what a crash interrupted.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import destination_root
from daemon.delivery.fileops import ContentChangedError, Entry, move_entry
from daemon.delivery.naming import unique_destination
from daemon.delivery.permissions import Ownership
from daemon.delivery.settle import SettleOutcome, settle_move
from daemon.hashing import sha256_file
from daemon.outcomes import Decision, destination_for
from daemon.storage.refiles import RefileIntent
from daemon.storage.store import Store

logger = logging.getLogger(__name__)

NOT_WHERE_FILED = "not at the path the daemon filed it at (moved by staff?): left alone"


@dataclass(frozen=True)
class RefileRequest:
    """Move filed frame `image_id` from `current` into `folder`, as `decision`, because `reason`."""

    image_id: int
    sha256: str
    current: Path
    folder: Path
    decision: Decision
    reason: str


def refile(
    store: Store, paths: Paths, request: RefileRequest, ownership: Ownership | None = None
) -> Path | None:
    """Move one filed frame into `request.folder`; returns its new path.

    None when the frame is not where the daemon filed it, or holds other bytes (staff moved or
    replaced it): that is recorded and logged, and the file is never touched. An OSError (a
    destination refusing files) leaves the frame where it was, its refile closed as not done.
    """
    intended = unique_destination(request.folder, request.current.name)
    intent = RefileIntent(
        image_id=request.image_id,
        sha256=request.sha256,
        source_path=str(request.current),
        intended_path=str(intended),
        decision=request.decision,
        reason=request.reason,
    )
    if not _regular_file(request.current):
        _not_moved(store, intent, NOT_WHERE_FILED, None)
        return None
    refile_id = store.record_refile_intent(intent)
    return _complete(store, paths, refile_id, intent, ownership or Ownership())


def settle_refiles(store: Store, paths: Paths, ownership: Ownership | None = None) -> int:
    """At start-up: finish every refile recorded as intended and not as done; returns how many."""
    settled = 0
    for open_refile in store.open_refiles():
        intent, refile_id = open_refile.intent, open_refile.id
        source, destination = Path(intent.source_path), Path(intent.intended_path)
        outcome = settle_move(source, destination, intent.sha256)
        if outcome in (SettleOutcome.ALREADY_MOVED, SettleOutcome.COMPLETED):
            if _holds(destination, intent.sha256):
                _record_moved(store, paths, refile_id, intent, destination, ownership)
            else:
                _not_moved(store, intent, f"{destination} holds other content", refile_id)
        elif outcome is SettleOutcome.MISSING:
            _not_moved(store, intent, "found neither where it was nor where it went", refile_id)
        else:  # not started, or its name taken meanwhile: move it now
            try:
                _complete(store, paths, refile_id, intent, ownership or Ownership())
            except OSError as err:  # closed as not done; the filing pass tries again
                logger.error("%s: could not be moved at start-up: %s", source, err)
        settled += 1
    return settled


def _complete(
    store: Store, paths: Paths, refile_id: int, intent: RefileIntent, ownership: Ownership
) -> Path | None:
    source, destination = Path(intent.source_path), Path(intent.intended_path)
    try:
        try:
            move_entry(Entry.at(source), destination, sha256=intent.sha256)
        except FileExistsError:  # never overwrite: another free name, recorded first
            destination = unique_destination(destination.parent, destination.name)
            store.record_refile_target(refile_id, str(destination))
            move_entry(Entry.at(source), destination, sha256=intent.sha256)
    except ContentChangedError as err:
        _not_moved(store, intent, f"holds other bytes than classified ({err.strerror})", refile_id)
        return None
    except FileNotFoundError:
        _not_moved(store, intent, NOT_WHERE_FILED, refile_id)
        return None
    except OSError as err:
        # move_entry leaves the file where it was: close this try, the caller retries later.
        store.record_not_refiled(intent, f"move failed, will retry: {err}", refile_id)
        raise
    _record_moved(store, paths, refile_id, intent, destination, ownership)
    return destination


def _record_moved(
    store: Store,
    paths: Paths,
    refile_id: int,
    intent: RefileIntent,
    destination: Path,
    ownership: Ownership | None,
) -> None:
    root = destination_root(paths, destination_for(intent.decision))
    (ownership or Ownership()).apply(destination, up_to=root)
    store.record_refiled(refile_id, str(destination))
    logger.info(
        "%s -> %s (%s: %s)", intent.source_path, destination, intent.decision, intent.reason
    )


def _not_moved(store: Store, intent: RefileIntent, note: str, refile_id: int | None) -> None:
    logger.warning(
        "%s: not moved to %s as %s: %s",
        intent.source_path,
        Path(intent.intended_path).parent,
        intent.decision,
        note,
    )
    store.record_not_refiled(intent, note, refile_id)


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _holds(path: Path, sha256: str) -> bool:
    try:
        return sha256_file(path) == sha256
    except OSError:
        return False
