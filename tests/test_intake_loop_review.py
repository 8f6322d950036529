"""Intake loop and tracker under review hX6: the due-time cache, no spinning, clocks, stops."""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from daemon.intake import loop as loop_module
from daemon.intake.arrivals import Intake
from daemon.intake.loop import intake_loop
from daemon.intake.names import NameFilter
from daemon.intake.stability import Hint, StabilityTracker
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Store
from tests.fake_clock import FakeClock, SimulatedStop

PATIENCE = 30.0
COMPLETE = b"\xff\xd8 a frame \xff\xd9"
CUT_SHORT = b"\xff\xd8\xff\xda\x00\x08" + b"\x11" * 200  # scan data, no EOI


class _SimIntake(Intake):
    """A real Intake (real tracker, store, files) whose waits move the simulated clock; a
    hint queued makes the wait return at once, as the real event does. Counts its rounds."""

    def __init__(self, clock: FakeClock, at: dict[float, Callable[[], None]], **kw: Any) -> None:
        super().__init__(**kw)
        self._clock, self._at = clock, dict(at)
        self.rounds: Counter[str] = Counter()
        self.recorded_at: list[float] = []

    def wait_for_hints(self, timeout: float) -> None:
        if self._hinted.is_set():
            self._hinted.clear()
            return
        target = self._clock.now + max(0.0, timeout)
        due = [when for when in self._at if when <= target]
        if due:  # an outside event (a file dropped) lands during the wait: it wakes the loop
            self._clock.now = max(self._clock.now, min(due))
            self._at.pop(min(due))()
            self._hinted.clear()
            return
        self._clock.now = target

    def run_once(self, *, due_only: bool = False, stop: threading.Event | None = None) -> int:
        self.rounds["due" if due_only else "full"] += 1
        recorded = super().run_once(due_only=due_only, stop=stop)
        self.recorded_at += [self._clock.now] * recorded
        return recorded


def _sim_intake(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    at: dict[float, Callable[[], None]],
    tracker_clock: Callable[[], float] | None = None,
    quiet: float = 1.0,
) -> tuple[_SimIntake, FakeClock, Path, Path]:
    clock = FakeClock()
    monkeypatch.setattr(loop_module, "time", SimpleNamespace(monotonic=clock))
    db = tmp_path / "t.db"
    upgrade_database(f"sqlite:///{db}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    intake = _SimIntake(
        clock,
        at,
        store=Store(create_db_engine(f"sqlite:///{db}")),
        tracker=StabilityTracker(quiet, incomplete_grace_seconds=5.0, clock=tracker_clock or clock),
        name_filter=NameFilter([".jpg"]),
        inboxes=[inbox],
        on_queued=lambda: None,
    )
    return intake, clock, inbox, db


def _rows(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM images").fetchone()[0])


def test_held_unreadable_and_open_paths_cause_no_due_only_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spin check over 60 simulated seconds: a cut-short file (held for the grace), a path
    lstat cannot look at, a file whose writer never closes, and one that changes every
    second. Each due-only round must be earned by a due time or a hint."""
    holder: list[_SimIntake] = []

    def drop() -> None:
        intake, inbox = holder[0], tmp_path / "inbox"
        (inbox / "cut.jpg").write_bytes(CUT_SHORT)
        (inbox / "open.jpg").write_bytes(COMPLETE + b"1")
        (inbox / "ok.jpg").write_bytes(COMPLETE + b"2")
        (inbox / "grow.jpg").write_bytes(COMPLETE)
        intake.hint(inbox / "cut.jpg")
        intake.hint(inbox / "open.jpg", Hint.WRITTEN)
        intake.hint(inbox / "ok.jpg")
        intake.hint(inbox / "grow.jpg")
        intake.hint(inbox / ("x" * 300 + ".jpg"))  # ENAMETOOLONG

    def grow() -> None:  # changed without any event (a network share): only full rounds see it
        with (tmp_path / "inbox" / "grow.jpg").open("ab") as f:
            f.write(b"\x00")

    at: dict[float, Callable[[], None]] = {1001.0: drop}
    at.update({1002.0 + k: grow for k in range(0, 50)})
    intake, _, _, db = _sim_intake(tmp_path, monkeypatch, at)
    holder.append(intake)
    intake_loop(intake, SimulatedStop(intake._clock, 1060.0), 3600.0)  # type: ignore[arg-type]

    assert _rows(db) == 4  # ok; cut and open after the 5 s grace; grow once it stopped
    # 60 s / 0.3 s a full round; due-only rounds: a handful per hint/due time, not per 50 ms.
    assert intake.rounds["full"] < 250
    assert intake.rounds["due"] < 60, intake.rounds


def test_a_tracker_clock_set_back_a_day_costs_at_most_a_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracker clock that runs backwards (injected) mid-quiet: the cached due time is a day
    away; the full round restarts the timer, and the file is taken one quiet period later."""
    holder: list[_SimIntake] = []
    jumped = {"back": 0.0}

    def drop() -> None:
        image = tmp_path / "inbox" / "IMG_1.jpg"
        image.write_bytes(COMPLETE)
        holder[0].hint(image)

    def set_back() -> None:
        jumped["back"] = 86400.0

    clock_ref: list[FakeClock] = []
    at = {1001.0: drop, 1001.5: set_back}
    intake, clock, _, db = _sim_intake(
        tmp_path, monkeypatch, at, tracker_clock=lambda: clock_ref[0].now - jumped["back"]
    )
    clock_ref.append(clock)
    holder.append(intake)
    intake_loop(intake, SimulatedStop(clock, 1010.0), 3600.0)  # type: ignore[arg-type]
    assert _rows(db) == 1
    assert intake.recorded_at[0] < 1001.5 + 1.0 + 2 * loop_module.TICK_SECONDS + 0.2
    assert intake.rounds["due"] < 20, intake.rounds


def test_the_cached_due_time_is_never_later_than_the_truth_with_notes_from_other_threads(
    tmp_path: Path,
) -> None:
    """Notes (new paths, CLOSED, WRITTEN, hold_incomplete) race with due-only passes; between
    passes the cache must be at or before the first real due time (else a wait is missed)."""
    tracker = StabilityTracker(0.02, incomplete_grace_seconds=0.05)
    paths = [tmp_path / f"IMG_{k}.jpg" for k in range(40)]
    for path in paths:
        path.write_bytes(COMPLETE)
    done = threading.Event()
    late: list[tuple[float, float]] = []

    def noter(seed: int) -> None:
        k = seed
        while not done.is_set():
            k = (k * 7 + 3) % len(paths)
            hint = (Hint.LOOK, Hint.CLOSED, Hint.WRITTEN, Hint.CLOSED)[k % 4]
            tracker.note(paths[k], hint)

    def taker() -> None:
        while not done.is_set():
            for found in tracker.take_stable(due_only=True):
                if found.path.name.endswith(("1.jpg", "3.jpg")):
                    tracker.hold_incomplete(found)

    threads = [threading.Thread(target=noter, args=(s,)) for s in (1, 2)]
    threads.append(threading.Thread(target=taker))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with tracker._take_lock, tracker._lock:  # between passes, notes held off
            truth = min(map(tracker._due_at, tracker._pending.values()), default=math.inf)
            if tracker._next_due > truth:
                late.append((tracker._next_due, truth))
        time.sleep(0.001)
    done.set()
    for thread in threads:
        thread.join(PATIENCE)
    assert late == []


def test_a_due_only_pass_at_the_due_time_takes_the_path(tmp_path: Path) -> None:
    """seconds_to_due() said 0, the due-only pass looked, and did not take it: with a clock
    that stands (tests) the cache says 'due now' for ever; a real clock costs a round."""
    now = [186720.35962882297]
    tracker = StabilityTracker(0.3, clock=lambda: now[0])
    image = tmp_path / "IMG_1.jpg"
    image.write_bytes(COMPLETE)
    tracker.note(image)
    assert tracker.take_stable(due_only=True) == []  # first look, quiet_since = now
    now[0] = now[0] + 0.3  # exactly the due time
    assert tracker.seconds_to_due() == 0.0
    assert [found.path for found in tracker.take_stable(due_only=True)] == [image]


def test_a_stop_during_a_big_round_ends_it_after_the_commit_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 stable files in one round (a card dumped while the daemon was down); the stop lands
    with the first commit of 64. The round hashes and records all 300 before the thread sees
    it: with 4 MB frames on a station, tens of seconds past systemd's stop timeout."""
    db = tmp_path / "t.db"
    upgrade_database(f"sqlite:///{db}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for k in range(300):
        (inbox / f"IMG_{k:04}.jpg").write_bytes(COMPLETE + str(k).encode())
    stop, wake = threading.Event(), threading.Event()

    def queued() -> None:
        stop.set()
        wake.set()

    tracker = StabilityTracker(0.0)
    intake = Intake(
        store=Store(create_db_engine(f"sqlite:///{db}")),
        tracker=tracker,
        name_filter=NameFilter([".jpg"]),
        inboxes=[inbox],
        on_queued=queued,
        wake=wake,
    )
    intake.rescan()
    intake.run_once()  # first looks
    thread = threading.Thread(target=intake_loop, args=(intake, stop, 3600.0), daemon=True)
    thread.start()
    thread.join(PATIENCE)
    assert not thread.is_alive()
    assert _rows(db) <= 64
