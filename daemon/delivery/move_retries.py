"""Per-entry move retries: a backoff for each failing entry, then a verdict, each logged once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum

logger = logging.getLogger(__name__)

# A stuck entry is still tried now and then (staff may fix the folder), never in a hot loop.
STUCK_RETRY_SECONDS = 3600.0


class Verdict(StrEnum):
    RETRY = "retry"  # try again after the backoff
    GIVE_UP = "give_up"  # the attempts are spent: set the entry aside


@dataclass
class _Failing:
    attempts: int
    next_try: float  # monotonic: station clocks jump
    reason: str


class MoveRetries:
    """Remembers which entries failed to move, when each may be tried again, and how often.

    Only the entries concerned wait: every other move goes on. Kept in memory: after a restart
    a stuck entry gets a fresh set of tries (a restart is how staff say "I fixed it").
    """

    def __init__(
        self,
        *,
        first_delay: float,
        max_attempts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first_delay = first_delay
        self._max_attempts = max_attempts
        self._clock = clock
        self._failing: dict[Hashable, _Failing] = {}

    def due(self, key: Hashable) -> bool:
        entry = self._failing.get(key)
        return entry is None or self._clock() >= entry.next_try

    def attempts(self, key: Hashable) -> int:
        entry = self._failing.get(key)
        return 0 if entry is None else entry.attempts

    def failed(self, key: Hashable, what: str, reason: str) -> Verdict:
        """Count one failed try of `key`; log the first failure, not each retry."""
        entry = self._failing.setdefault(key, _Failing(0, 0.0, reason))
        entry.attempts += 1
        first, entry.reason = entry.attempts == 1, reason
        if entry.attempts >= self._max_attempts:
            entry.next_try = self._clock() + STUCK_RETRY_SECONDS
            return Verdict.GIVE_UP
        delay = min(self._first_delay * 2 ** (entry.attempts - 1), STUCK_RETRY_SECONDS)
        entry.next_try = self._clock() + delay
        log = logger.warning if first else logger.debug
        log(
            "%s: %s; retry %d of %d in %.1f s",
            what,
            reason,
            entry.attempts,
            self._max_attempts - 1,
            delay,
        )
        return Verdict.RETRY

    def set_aside(self, key: Hashable) -> None:
        """The entry was rerouted: its next destination gets a fresh set of tries."""
        self._failing.pop(key, None)

    def succeeded(self, key: Hashable) -> None:
        self._failing.pop(key, None)
