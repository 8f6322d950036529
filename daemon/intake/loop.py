"""The intake thread's rounds: new paths looked at when hinted, each path when its quiet ends.

A round every TICK_SECONDS looks at every pending path (catching changes the events do not
report); between them, a hint wakes the thread to look at the new paths at once, and the
thread wakes again when the first quiet period runs out. So a file is taken its quiet period
after it arrived, not up to two ticks later: measured on a burst of 301 frames with a 1 s quiet
period, the first rows were recorded 1.34 s after the drop with the fixed tick.
"""

from __future__ import annotations

import threading
import time

from daemon.intake.arrivals import Intake

TICK_SECONDS = 0.25  # a look at every pending path; well under any sensible quiet period
# The least time between two rounds: a burst of hints (or an inbox being written to all the
# time) is taken in slices, not one round per event; each round costs a pass over the pending
# paths in Python, 1 to 3 ms with 10,000 of them.
MIN_GAP_SECONDS = 0.05


def intake_loop(intake: Intake, stop: threading.Event, rescan_every: float) -> None:
    """Rounds until `stop`; whoever sets it also sets the intake's wake event."""
    # The periodic rescan (the safety net for lost events) is timed on the monotonic clock:
    # APScheduler's interval trigger follows the wall clock, so a station clock set back a day
    # (an RTC corrected by NTP) switched the rescans off for that day.
    next_rescan = time.monotonic() + rescan_every
    next_full = last_round = time.monotonic()
    while not stop.is_set():
        intake.wait_for_hints(_wait(intake.seconds_to_due(), next_full - time.monotonic()))
        if stop.wait(last_round + MIN_GAP_SECONDS - time.monotonic()):
            return
        full = time.monotonic() >= next_full
        if full and time.monotonic() >= next_rescan:
            intake.rescan()
            next_rescan = time.monotonic() + rescan_every
        intake.run_once(due_only=not full, stop=stop)
        last_round = time.monotonic()
        if full:
            # From the round's end: a full round slower than a tick (a network share, tens of
            # thousands of pending paths) is still followed by a tick's rest.
            next_full = last_round + TICK_SECONDS


def _wait(to_due: float | None, to_full: float) -> float:
    return to_full if to_due is None else min(to_due, to_full)
