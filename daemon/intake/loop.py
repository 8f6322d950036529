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
# time) is taken in slices, not one round per event.
MIN_GAP_SECONDS = 0.02


def intake_loop(intake: Intake, stop: threading.Event, rescan_every: float) -> None:
    # The periodic rescan (the safety net for lost events) is timed on the monotonic clock:
    # APScheduler's interval trigger follows the wall clock, so a station clock set back a day
    # (an RTC corrected by NTP) switched the rescans off for that day.
    next_rescan = time.monotonic() + rescan_every
    next_full = time.monotonic() + TICK_SECONDS
    last_round = time.monotonic()
    while not stop.is_set():
        intake.wait_for_hints(_wake_at(intake.next_due(), next_full) - time.monotonic())
        if stop.wait(last_round + MIN_GAP_SECONDS - time.monotonic()):
            return
        now = time.monotonic()
        full = now >= next_full
        if full:
            next_full = now + TICK_SECONDS
            if now >= next_rescan:
                intake.rescan()
                next_rescan = now + rescan_every
        intake.run_once(due_only=not full)
        last_round = time.monotonic()


def _wake_at(due: float | None, next_full: float) -> float:
    return next_full if due is None else min(due, next_full)
