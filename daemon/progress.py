"""Whether the queue moves: work waiting and nothing finished for too long is a stall."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from daemon.storage.store import Store, StoreUnavailable
from daemon.storage.stuck import QueueProgress

logger = logging.getLogger(__name__)


def stall_reason(pending: int, stalled_for: float, limit: float) -> str | None:
    """The one rule, shared by the watchdog and `tigerwatch status`; None while all is well."""
    if pending == 0 or stalled_for <= limit:
        return None
    entries = "entry" if pending == 1 else "entries"
    return (
        f"stalled: {pending} {entries} waiting and nothing finished for {stalled_for:.0f} s "
        f"(watch.stall_seconds {limit:g})"
    )


def stall_from_records(progress: QueueProgress, now: datetime, limit: float) -> str | None:
    """The rule on the database's own timestamps, for a process that did not watch (status)."""
    marks = [mark for mark in (progress.last_finished, progress.oldest_pending) if mark]
    if not marks:
        return None
    return stall_reason(progress.pending, (now - max(marks)).total_seconds(), limit)


class ProgressWatch:
    """Asked at each health check; measures on the monotonic clock (station clocks jump).

    "Finished" is a row done or an entry recorded as stuck: a stuck entry is waiting for a
    person, not for the daemon, so it never counts as a stall by itself; nor do moves that are
    tried and refused (a full disk, an entry's backoff).
    """

    def __init__(
        self,
        store: Store,
        limit_seconds: float,
        *,
        tries: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        # Moves tried and refused (a paused destination, an entry's backoff) are progress of a
        # kind: the daemon is not hung, it waits for the world.
        self._tries = tries
        self._last_tries = tries()
        self._limit = limit_seconds
        self._clock = clock
        self._last: QueueProgress | None = None
        self._since = clock()  # when progress was last seen (or nothing was waiting)
        self._reported: str | None = None

    def check(self) -> str | None:
        """The reason the queue counts as stalled now, or None; logs a stall once, and its end."""
        progress: QueueProgress | None
        try:
            progress = self._store.queue_progress()
        except StoreUnavailable:
            # The worker cannot finish anything either: the time without progress runs on.
            progress = self._last
        if progress is None:
            return None
        now, tries = self._clock(), self._tries()
        moved = self._last is None or progress.finished != self._last.finished
        if progress.pending == 0 or moved or tries != self._last_tries:
            self._since = now
        self._last_tries = tries
        self._last = progress
        reason = stall_reason(progress.pending, now - self._since, self._limit)
        if reason is not None and self._reported is None:
            logger.error("%s; withholding the watchdog ping", reason)
        elif reason is None and self._reported is not None:
            logger.info("the queue moves again; watchdog pings resume")
        self._reported = reason
        return reason
