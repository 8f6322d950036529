"""The intake thread's loop: a hinted file is taken when its quiet period ends, not at a tick."""

from __future__ import annotations

import sqlite3
import threading
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daemon.intake import loop as loop_module
from daemon.intake.arrivals import Intake
from daemon.intake.loop import intake_loop
from daemon.intake.names import NameFilter
from daemon.intake.stability import StabilityTracker
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Store
from tests.fake_clock import FakeClock, SimulatedStop

QUIET = 0.3
PATIENCE = 30.0  # generous: a failure waits this long, a pass does not


def _queued(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM images").fetchone()[0])


def test_a_hinted_file_is_taken_without_the_full_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the every-path rounds put an hour apart, only the hint's wake and the due time's
    wake can take the file: the loop must not wait for the next tick."""
    monkeypatch.setattr(loop_module, "TICK_SECONDS", 3600.0)
    db = tmp_path / "tigerwatch.db"
    upgrade_database(f"sqlite:///{db}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    queued = threading.Event()
    intake = Intake(
        store=Store(create_db_engine(f"sqlite:///{db}")),
        tracker=StabilityTracker(QUIET),
        name_filter=NameFilter([".jpg"]),
        inboxes=[inbox],
        on_queued=queued.set,
    )
    stop = threading.Event()
    thread = threading.Thread(target=intake_loop, args=(intake, stop, 3600.0))
    thread.start()
    try:
        image = inbox / "IMG_0001.jpg"
        image.write_bytes(b"\xff\xd8 a frame \xff\xd9")
        intake.hint(image)
        assert queued.wait(PATIENCE), "the file was not taken once its quiet period ended"
        assert _queued(db) == 1
    finally:
        stop.set()
        intake.hint(inbox)  # wakes the loop, which sees the stop
        thread.join(PATIENCE)
    assert not thread.is_alive()


class _SlowFullRounds:
    """An intake whose every-path round costs `full_cost` seconds (tens of thousands of
    pending paths, or an inbox on a network share); nothing is ever due or hinted."""

    def __init__(self, clock: FakeClock, stop: SimulatedStop, full_cost: float) -> None:
        self._clock, self._stop, self._cost = clock, stop, full_cost
        self.full_rounds: list[tuple[float, float]] = []

    def wait_for_hints(self, timeout: float) -> None:
        self._clock.now += max(0.0, timeout)

    def seconds_to_due(self) -> float | None:
        return None

    def rescan(self) -> None:
        pass

    def run_once(self, *, due_only: bool = False, stop: object = None) -> int:
        if not due_only:
            start = self._clock.now
            self._clock.now += self._cost
            self.full_rounds.append((start, self._clock.now))
            self._stop.flag = len(self.full_rounds) >= 10
        return 0


def test_a_full_round_slower_than_a_tick_is_still_followed_by_a_tick_of_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by review hX5: counted from a round's start, a round of two ticks was followed
    by the next at once, and the thread (holding the GIL the model needs) never rested."""
    clock = FakeClock()
    monkeypatch.setattr(loop_module, "time", SimpleNamespace(monotonic=clock))
    stop = SimulatedStop(clock)
    intake = _SlowFullRounds(clock, stop, full_cost=2 * loop_module.TICK_SECONDS)

    intake_loop(intake, stop, 3600.0)  # type: ignore[arg-type]

    rests = [later[0] - earlier[1] for earlier, later in pairwise(intake.full_rounds)]
    assert len(rests) == 9
    assert min(rests) >= loop_module.TICK_SECONDS


class _ToldWhenWaitingLong(Intake):
    """Sets `waiting` as the loop starts a wait of more than a second."""

    def __init__(self, waiting: threading.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting_now = waiting

    def wait_for_hints(self, timeout: float) -> None:
        if timeout > 1.0:
            self._waiting_now.set()
        super().wait_for_hints(timeout)


def test_a_stop_with_the_wake_event_ends_a_loop_that_waits_for_hints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's stop sets the intake's wake event too (service._Threads.stop_all): the
    loop must not wait for a tick, a due time or a hint to see it (review hX5)."""
    monkeypatch.setattr(loop_module, "TICK_SECONDS", 3600.0)
    db = tmp_path / "tigerwatch.db"
    upgrade_database(f"sqlite:///{db}")
    wake, waiting = threading.Event(), threading.Event()
    intake = _ToldWhenWaitingLong(
        waiting,
        store=Store(create_db_engine(f"sqlite:///{db}")),
        tracker=StabilityTracker(QUIET),
        name_filter=NameFilter([".jpg"]),
        inboxes=[tmp_path],
        on_queued=lambda: None,
        wake=wake,
    )
    stop = threading.Event()
    thread = threading.Thread(target=intake_loop, args=(intake, stop, 3600.0), daemon=True)
    thread.start()
    assert waiting.wait(PATIENCE)  # in its hour-long wait now
    stop.set()
    wake.set()
    thread.join(PATIENCE)
    assert not thread.is_alive(), "the loop did not see the stop while waiting for hints"
