"""Fault 7: the station's wall clock jumps a day forwards and backwards during quiet periods,
retry delays and rescans: nothing is taken early, nothing gets stuck.

No duration is asserted. "Not early" is checked one way only: a row (or attempt) that a read
saw, when that read ended before the earliest moment it could be due, came early; a slow
machine only makes such a read end later, so it can never fail these checks. "Not stuck" is a
hang guard (SETTLE_TIMEOUT): a timer on the jumped wall clock would wait a day. How long things
took is printed as figures.

The real system clock is never touched. Instead every wall-clock source the daemon (and the
scheduler library it uses, if any) can reach is replaced by one that reads real time plus an
offset the test jumps: the `time` module's wall-clock functions and `datetime.now()` as seen
from those modules. `time.monotonic()` is left alone: it never jumps, which is the point.
"""

from __future__ import annotations

import ast
import datetime as dt
import os
import random
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import struct_time

import pytest

import daemon.intake.watcher
from tests.daemon_support import (
    REPO_ROOT,
    SETTLE_TIMEOUT,
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
)
from tests.faults.fault_kit import (
    count,
    has_row,
    migrated,
    noise_jpeg,
    report,
    row_done,
    sha256_hex,
    wait_until,
    write_file,
)

pytestmark = pytest.mark.fault

DAY = 86_400.0
# Modules whose wall-clock reads are redirected. APScheduler ran the rescan until this test
# showed that its interval trigger follows the wall clock; it is no longer a dependency, but
# its name stays here so that bringing it back is caught.
CLOCK_USERS = ("daemon", "apscheduler")
# The only places allowed to read the wall clock: timestamps, never timers.
# The audit names its folder by the station's date (review/audit/<date>/), a label, not a timer.
WALL_CLOCK_READERS_ALLOWED = {"daemon.storage.schema.utcnow", "daemon.staff.audit.draw_audit"}

_REAL_TIME = time
_REAL_DATETIME = dt.datetime


@dataclass
class StationClock:
    """The simulated station wall clock: real time plus an offset that tests jump."""

    offset: float = 0.0
    jumps: list[float] = field(default_factory=list)
    readers: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def jump(self, seconds: float) -> None:
        self.offset += seconds
        self.jumps.append(seconds)

    def read(self, caller: types.FrameType | None) -> float:
        if caller is not None:
            name = f"{caller.f_globals.get('__name__')}.{caller.f_code.co_name}"
            with self._lock:
                self.readers[name] += 1
        return _REAL_TIME.time() + self.offset

    def daemon_readers(self) -> set[str]:
        return {name for name in self.readers if name.startswith("daemon.")}


class JumpingTimeModule(types.ModuleType):
    """`time` with jumping wall-clock functions; monotonic and the rest are the real ones."""

    def __init__(self, clock: StationClock) -> None:
        super().__init__("time")
        self._clock = clock

    def __getattr__(self, name: str) -> object:
        return getattr(_REAL_TIME, name)

    def time(self) -> float:
        return self._clock.read(sys._getframe(1))

    def time_ns(self) -> int:
        return int(self._clock.read(sys._getframe(1)) * 1e9)

    def localtime(self, seconds: float | None = None) -> struct_time:
        return _REAL_TIME.localtime(
            self._clock.read(sys._getframe(1)) if seconds is None else seconds
        )

    def gmtime(self, seconds: float | None = None) -> struct_time:
        return _REAL_TIME.gmtime(self._clock.read(sys._getframe(1)) if seconds is None else seconds)


class _RealInstancesToo(type):
    """isinstance(real_datetime, JumpingDatetime) stays True: code that checks types works."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _REAL_DATETIME)


def jumping_datetime(clock: StationClock) -> type[dt.datetime]:
    """A datetime class whose now()/utcnow()/today() follow the station clock."""

    class JumpingDatetime(dt.datetime, metaclass=_RealInstancesToo):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return _REAL_DATETIME.fromtimestamp(clock.read(sys._getframe(1)), tz)

        @classmethod
        def utcnow(cls) -> dt.datetime:  # type: ignore[override]
            stamp = clock.read(sys._getframe(1))
            return _REAL_DATETIME.fromtimestamp(stamp, dt.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> dt.datetime:  # type: ignore[override]
            return _REAL_DATETIME.fromtimestamp(clock.read(sys._getframe(1)))

    return JumpingDatetime


@pytest.fixture
def station_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[StationClock]:
    """Redirect every wall-clock source of the daemon's modules to a jumpable clock."""
    clock = StationClock()
    fake_time, fake_datetime = JumpingTimeModule(clock), jumping_datetime(clock)
    patched = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in CLOCK_USERS:
            continue
        for attribute, value in list(vars(module).items()):
            if value is _REAL_TIME:
                monkeypatch.setattr(module, attribute, fake_time)
                patched += 1
            elif value is _REAL_DATETIME:
                monkeypatch.setattr(module, attribute, fake_datetime)
                patched += 1
    assert patched, "no wall-clock source found to redirect"
    yield clock


def assert_only_timestamps_read_the_wall_clock(clock: StationClock) -> None:
    readers = clock.daemon_readers()
    assert readers, "the daemon never read the redirected wall clock: the patch missed it"
    assert readers <= WALL_CLOCK_READERS_ALLOWED, readers


def assert_not_taken_before(station: Station, path: Path, due: float, what: str) -> None:
    """A row for `path` seen by a read that ended before `due` (monotonic) was taken early."""
    taken = has_row(station, path)
    read_ended = time.monotonic()
    assert not (taken and read_ended < due), what


# --- (a) a slow writer's quiet period ------------------------------------------------------------


def test_wall_clock_jumps_during_a_quiet_period_neither_take_early_nor_stall(
    tmp_path: Path, tiny_model_dir: Path, station_clock: StationClock
) -> None:
    quiet, pause = 1.5, 0.5
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": quiet, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    data = noise_jpeg(1, size=(320, 240))
    step = len(data) // 6 + 1
    chunks = [data[start : start + step] for start in range(0, len(data), step)]
    # Jumps while the writer pauses (each pause is a quiet period cut short by the next write)
    # and twice inside the final quiet period, after the last write.
    jumps_after_chunk = {1: +DAY, 3: -2 * DAY, 4: +DAY}
    slow = station.inbox / "slow.jpg"
    with daemon_thread(station):
        warm = write_file(station.inbox / "warm-up.jpg", noise_jpeg(2))
        wait_until(lambda: row_done(station, warm), "the warm-up file")
        for index, chunk in enumerate(chunks):
            last_write = time.monotonic()  # before the write: the quiet period starts after
            with slow.open("ab") as writer:
                writer.write(chunk)
            stamp = int(station_clock.read(None) * 1e9)
            os.utime(slow, ns=(stamp, stamp))  # what the kernel would stamp with the jumped clock
            if index in jumps_after_chunk:
                station_clock.jump(jumps_after_chunk[index])
            due = last_write + quiet
            assert_not_taken_before(station, slow, due, "taken while still being written")
            time.sleep(pause)  # the writer's pace, not a wait for the daemon
        time.sleep(quiet / 3)  # into the final quiet period, then the clock jumps both ways
        station_clock.jump(+DAY)
        assert_not_taken_before(station, slow, due, "taken early after a forward jump")
        time.sleep(quiet / 3)
        station_clock.jump(-DAY)
        assert_not_taken_before(station, slow, due, "taken early after a backward jump")
        # Hang guard: a quiet period timed on the wall clock set back would last a day.
        wait_until(lambda: has_row(station, slow), "the slow file's row", interval=0.01)
        taken_after = time.monotonic() - last_write
        wait_until(lambda: settled(station), "an idle daemon")
    figures = {
        "quiet_seconds": quiet,
        "wall-clock jumps (days)": [f"{jump / DAY:+.0f}" for jump in station_clock.jumps],
        "row seen after the last write (s, monotonic)": round(taken_after, 2),
        "wall-clock readers in daemon code": dict(station_clock.readers),
    }
    report("clock jumps (a): during a slow writer's quiet period", figures)
    assert_only_timestamps_read_the_wall_clock(station_clock)
    assert check_invariant(station, {sha256_hex(data), sha256_hex(noise_jpeg(2))}) == []


# --- (b) a failing file's retry delays -----------------------------------------------------------


def attempts_of(station: Station, path: Path) -> int:
    if not migrated(station):
        return 0
    rows = query(station, "SELECT attempts FROM images WHERE original_path = ?", str(path))
    return int(str(rows[0][0])) if rows else 0


def wait_for_attempt(
    station: Station, path: Path, attempt: int, *, not_before: float | None = None
) -> float | None:
    """Poll until `attempt` is recorded (hang guard: SETTLE_TIMEOUT).

    Fails when a read that saw it ended before `not_before` (monotonic): it came early.
    Returns when the last read that did not see it yet began (it was recorded after that), or
    None when the first read already saw it.
    """
    not_yet: float | None = None
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        began = time.monotonic()
        seen = attempts_of(station, path)
        ended = time.monotonic()
        if seen >= attempt:
            early = not_before is not None and ended < not_before
            assert not early, f"attempt {attempt} came before its retry delay was up"
            return not_yet
        not_yet = began
        assert ended < deadline, f"timed out after {SETTLE_TIMEOUT} s waiting for attempt {attempt}"
        time.sleep(0.01)


def test_wall_clock_jumps_during_retry_delays_neither_retry_early_nor_stall(
    tmp_path: Path, tiny_model_dir: Path, station_clock: StationClock
) -> None:
    delay, attempts = 1.0, 3  # retries wait delay x attempts so far: 1 s, then 2 s
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        worker={
            "batch_max_wait_seconds": 0.2,
            "retry_delay_seconds": delay,
            "max_decode_attempts": attempts,
            "destination_retry_seconds": 0.5,
        },
    )
    bad_data = random.Random(3).randbytes(5000)
    good_data = noise_jpeg(4)
    seen: dict[int, float] = {}
    with daemon_thread(station):
        bad = write_file(station.inbox / "undecodable.jpg", bad_data)
        # Each jump right after an attempt is recorded, i.e. at the start of its retry delay.
        # The next attempt is due `delay x attempt` after this one was recorded, and it was
        # recorded after `not_yet`: seeing the next one before not_yet + delay x attempt is early.
        not_yet = wait_for_attempt(station, bad, 1)
        seen[1] = time.monotonic()
        for attempt, jump in ((1, +DAY), (2, -2 * DAY)):
            station_clock.jump(jump)
            due = None if not_yet is None else not_yet + delay * attempt
            not_yet = wait_for_attempt(station, bad, attempt + 1, not_before=due)
            seen[attempt + 1] = time.monotonic()
        good = write_file(station.inbox / "good.jpg", good_data)
        wait_until(lambda: row_done(station, good) and row_done(station, bad), "both outcomes")
        wait_until(lambda: settled(station), "an idle daemon")
    gaps = {attempt: seen[attempt + 1] - seen[attempt] for attempt in (1, 2)}
    figures = {
        "retry_delay_seconds": delay,
        "wall-clock jumps (days)": [f"{jump / DAY:+.0f}" for jump in station_clock.jumps],
        "attempt 1 -> 2 (s, monotonic; due after 1.0)": round(gaps[1], 2),
        "attempt 2 -> 3 (s, monotonic; due after 2.0)": round(gaps[2], 2),
        "wall-clock readers in daemon code": dict(station_clock.readers),
    }
    report("clock jumps (b): during a failing file's retry delays", figures)
    (decision,) = query(station, "SELECT decision FROM images WHERE original_path = ?", str(bad))
    assert decision == ("quarantined",)
    assert_only_timestamps_read_the_wall_clock(station_clock)
    assert check_invariant(station, {sha256_hex(bad_data), sha256_hex(good_data)}) == []


# --- (c) the periodic rescan ---------------------------------------------------------------------


def test_rescans_go_on_after_the_wall_clock_jumps(
    tmp_path: Path,
    tiny_model_dir: Path,
    station_clock: StationClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rescan is the safety net for lost events: a clock set back a day (an RTC corrected
    by NTP) must not switch it off for a day."""
    interval = 1.0
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={
            "quiet_seconds": 0.3,
            "rescan_interval_seconds": interval,
            "health_check_seconds": 0.5,
        },
    )
    # A deaf watcher: no observer is ever started, so only the periodic rescan finds files.
    monkeypatch.setattr(daemon.intake.watcher.InboxWatcher, "start", lambda self: None)
    warm_data = noise_jpeg(9)
    contents = {sha256_hex(warm_data)}
    found_after: dict[str, float] = {}
    warm = write_file(station.inbox / "warm-up.jpg", warm_data)  # for the start-up scan
    with daemon_thread(station):
        wait_until(lambda: row_done(station, warm), "the file found by the start-up scan")
        for seed, (label, jump) in enumerate(
            (("before any jump", 0.0), ("after -1 day", -DAY), ("after +2 days", 2 * DAY)), 10
        ):
            if jump:
                station_clock.jump(jump)
            data = noise_jpeg(seed)
            contents.add(sha256_hex(data))
            path = write_file(station.inbox / f"rescan-{seed}.jpg", data)
            dropped = time.monotonic()
            # Hang guard: a rescan timed on the wall clock set back would wait a day.
            wait_until(
                lambda path=path: row_done(station, path),  # type: ignore[misc]
                f"the file dropped {label}, found by a rescan",
            )
            found_after[label] = round(time.monotonic() - dropped, 2)
        wait_until(lambda: settled(station), "an idle daemon")
    report(
        "clock jumps (c): periodic rescan with a deaf watcher",
        {
            "rescan_interval_seconds": interval,
            "found after (s, monotonic)": found_after,
            "wall-clock readers": dict(station_clock.readers),
        },
    )
    assert count(station, "images") == len(contents)
    assert check_invariant(station, contents) == []


# --- (d) no timer reads the wall clock -----------------------------------------------------------

WALL_CLOCK_SOURCES = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "localtime"),
    ("time", "gmtime"),
    ("time", "ctime"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


class WallClockCalls(ast.NodeVisitor):
    """Names the functions of one module that call a wall-clock source."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.scope: list[str] = []
        self.found: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # References, not only calls: `clock=time.time` as a default argument is a timer too.
        if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in WALL_CLOCK_SOURCES:
            self.found.add(".".join([self.module, *self.scope[:1]]))
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "time" and any(alias.name in {"time", "time_ns"} for alias in node.names):
            self.found.add(f"{self.module} (from time import time)")


def test_daemon_code_reads_the_wall_clock_only_for_timestamps() -> None:
    readers: set[str] = set()
    monotonic_users: set[str] = set()
    for path in sorted((REPO_ROOT / "daemon").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        visitor = WallClockCalls(module)
        visitor.visit(ast.parse(source))
        readers |= visitor.found
        if "time.monotonic" in source:
            monotonic_users.add(path.stem)
    report(
        "clock jumps (d): static check of daemon/**/*.py",
        {
            "wall-clock reads found in": sorted(readers),
            "allowed (timestamps only)": sorted(WALL_CLOCK_READERS_ALLOWED),
            "modules timing with time.monotonic": sorted(monotonic_users),
        },
    )
    assert readers <= WALL_CLOCK_READERS_ALLOWED, readers
    # The quiet period, the retry delays and the supervision loop are the timers that matter.
    assert {"stability", "worker", "service"} <= monotonic_users
