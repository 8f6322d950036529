"""Moves that fail for one entry alone: retried with backoff, then quarantined or left stuck."""

from __future__ import annotations

import logging
from pathlib import Path

from daemon.delivery.move_errors import MoveFault, classify_move_error
from daemon.delivery.move_retries import MoveRetries, Verdict
from daemon.outcomes import Destination
from daemon.storage.store import PendingMove, RowKind, Store, StoreUnavailable

logger = logging.getLogger(__name__)


class EntryFailures:
    """The router's answer to an entry that will not move, so that it holds up nothing else.

    Retried with a growing delay; when the tries are spent, a classified image whose
    destination refused it (a name that filesystem cannot hold, a copy that failed to verify)
    goes to quarantine instead; an entry that cannot be moved at all (its inbox folder refuses,
    it is a FIFO) is recorded as stuck with the reason and left in place, logged once.
    """

    def __init__(self, store: Store, *, first_delay: float, max_attempts: int) -> None:
        self._store = store
        self._retries = MoveRetries(first_delay=first_delay, max_attempts=max_attempts)

    def due(self, move: PendingMove) -> bool:
        return self._retries.due((move.kind, move.id))

    def moved(self, move: PendingMove) -> None:
        self._retries.succeeded((move.kind, move.id))

    def failed(self, move: PendingMove, err: OSError) -> None:
        source = Path(move.source_path)
        destination = Path(move.intended_path or source)
        fault = classify_move_error(err, source, destination)
        key = (move.kind, move.id)
        if self._retries.failed(key, f"cannot move {source}", fault.reason) is Verdict.RETRY:
            return
        try:
            self._set_aside(move, fault, destination)
        except StoreUnavailable:
            self._retries.set_aside(key)  # not recorded: a fresh set of tries, not an hour's wait
            raise

    def _set_aside(self, move: PendingMove, fault: MoveFault, destination: Path) -> None:
        source, key = Path(move.source_path), (move.kind, move.id)
        attempts = self._retries.attempts(key)
        if _quarantine_would_help(move, fault):
            reason = f"could not be moved to {destination.parent}: {fault.reason}"
            self._store.reroute_to_quarantine(move.id, reason)
            self._retries.set_aside(key)
            logger.error("%s: %s (%d tries): quarantined instead", source, reason, attempts)
        elif self._store.record_stuck(move.kind, move.id, move.source_path, fault.reason):
            logger.error(
                "%s: stuck: cannot be moved at all after %d tries: %s; left in the inbox, "
                "tried again hourly and at start-up",
                source,
                attempts,
                fault.reason,
            )


def _quarantine_would_help(move: PendingMove, fault: MoveFault) -> bool:
    return (
        not fault.at_source
        and move.kind is RowKind.IMAGE
        and move.destination is not Destination.QUARANTINE
    )
