"""A clock the test moves by hand, and a stop event whose waits move it: time without sleeping."""

from __future__ import annotations

import math


class FakeClock:
    """A monotonic-style clock the test moves by hand (or a simulated loop moves as it waits)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SimulatedStop:
    """A stop event for a loop run on a FakeClock: a wait moves the clock by its timeout. Set
    by hand (`flag`) or once the clock reaches `until`."""

    def __init__(self, clock: FakeClock, until: float = math.inf) -> None:
        self._clock, self._until = clock, until
        self.flag = False

    def is_set(self) -> bool:
        return self.flag or self._clock.now >= self._until

    def wait(self, timeout: float | None = None) -> bool:
        self._clock.advance(max(0.0, timeout or 0.0))
        return self.is_set()
