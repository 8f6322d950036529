"""Fault 4: the watch dies (inbox deleted and re-created, an exception in the event path);
the daemon notices, watches again (the health check repairs it), and loses nothing.

How soon it watches again is printed, never asserted: the waits are hang guards, and the
rescan interval is far longer than them, so a file found within one came through a watch."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent

import daemon.intake.arrivals
import daemon.intake.watcher
from daemon.intake.stability import Hint
from tests.daemon_support import Station, check_invariant, daemon_thread, make_station, settled
from tests.faults.fault_kit import (
    has_row,
    noise_jpeg,
    report,
    row_done,
    sha256_hex,
    wait_until,
    write_file,
)

HEALTH_CHECK = 0.5
# A rescan interval far longer than any test: only the watcher (and the rescan hint it sends
# when a watch is re-established) can deliver files.
WATCH_ONLY: dict[str, object] = {
    "quiet_seconds": 0.3,
    "rescan_interval_seconds": 300,
    "health_check_seconds": 0.5,
}
REPAIRED = "watch re-established"

pytestmark = pytest.mark.fault


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir, watch=WATCH_ONLY)


@pytest.fixture
def daemon_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The daemon's log lines; set before the daemon starts, or the start-up lines are lost."""
    caplog.set_level(logging.INFO, logger="daemon")
    return caplog


def logged(log: pytest.LogCaptureFixture, text: str, *, after: int = 0) -> bool:
    """True when a record from index `after` on contains `text`."""
    return any(text in record.getMessage() for record in list(log.records)[after:])


def watch_threads() -> set[threading.Thread]:
    """Every live watchdog observer thread the watcher started (thread objects: idents are
    reused)."""
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("watch:") and thread.is_alive()
    }


def warm_up(station: Station, log: pytest.LogCaptureFixture, contents: set[str]) -> None:
    """Wait until ready and a first file is done: the start-up scans have run by then, so a
    file dropped afterwards can only come through the watcher."""
    wait_until(lambda: logged(log, "ready in"), "the daemon to be ready")
    data = noise_jpeg(1)
    first = write_file(station.inbox / "first.jpg", data)
    wait_until(lambda: row_done(station, first), "the first file")
    contents.add(sha256_hex(data))


def seconds_until(predicate: Callable[[], bool], start: float, what: str) -> float:
    """Poll until `predicate` holds; seconds from `start` (monotonic) to when it was seen."""
    wait_until(predicate, what, interval=0.01)
    return time.monotonic() - start


def delete_and_recreate_inbox(
    station: Station, log: pytest.LogCaptureFixture, cycle: int, contents: set[str]
) -> tuple[float, float]:
    """rm -r the inbox, mkdir it again; returns (seconds until watched again, seconds from a
    later drop until that file is done)."""
    mark = len(log.records)
    shutil.rmtree(station.inbox)
    station.inbox.mkdir()
    recreated = time.monotonic()
    # Lands while nothing watches the new folder: only the rescan hint that comes with a
    # re-established watch can find it.
    gap_data, after_data = noise_jpeg(10 + cycle), noise_jpeg(20 + cycle)
    gap = write_file(station.inbox / f"gap-{cycle}.jpg", gap_data)
    resumed = seconds_until(
        lambda: logged(log, REPAIRED, after=mark), recreated, "the watch on the new inbox"
    )
    # The log says which folder and what was wrong with its watch.
    assert logged(log, f"Watch repair: {station.inbox}: ", after=mark)
    wait_until(lambda: row_done(station, gap), f"{gap.name}, via the repair's rescan hint")
    # Dropped after the repair's rescan is over: only the new watch can report it.
    after = write_file(station.inbox / f"after-{cycle}.jpg", after_data)
    processed = seconds_until(
        lambda: row_done(station, after), time.monotonic(), f"{after.name}, via the new watch"
    )
    contents |= {sha256_hex(gap_data), sha256_hex(after_data)}
    return resumed, processed


def test_inbox_deleted_and_recreated_is_watched_again(
    station: Station, daemon_log: pytest.LogCaptureFixture
) -> None:
    contents: set[str] = set()
    figures: dict[str, object] = {
        "health_check_seconds": HEALTH_CHECK,
        "rescan_interval_seconds": WATCH_ONLY["rescan_interval_seconds"],
    }
    with daemon_thread(station):
        warm_up(station, daemon_log, contents)
        for cycle in (1, 2):
            resumed, processed = delete_and_recreate_inbox(station, daemon_log, cycle, contents)
            figures[f"cycle {cycle}: watched again after re-creation (s)"] = round(resumed, 2)
            figures[f"cycle {cycle}: later file done after its drop (s)"] = round(processed, 2)
        wait_until(lambda: settled(station), "an idle daemon")
    report("watcher death (a): inbox deleted and re-created, twice", figures)
    assert check_invariant(station, contents) == []


def test_exception_in_the_hint_callback_does_not_kill_the_observer(
    station: Station, daemon_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = threading.Event()
    refusing.set()
    raised: list[float] = []
    original_hint = daemon.intake.arrivals.Intake.hint

    def refusing_hint(
        self: daemon.intake.arrivals.Intake, path: Path, kind: Hint = Hint.LOOK
    ) -> None:
        if refusing.is_set() and path.name == "refused.jpg":
            raised.append(time.monotonic())
            raise RuntimeError(f"injected fault while hinting {path}")
        original_hint(self, path, kind)

    monkeypatch.setattr(daemon.intake.arrivals.Intake, "hint", refusing_hint)
    contents: set[str] = set()
    with daemon_thread(station):
        warm_up(station, daemon_log, contents)
        observers_before = watch_threads()
        assert observers_before, "no watchdog observer thread found"
        refused_data, after_data = noise_jpeg(30), noise_jpeg(31)
        contents |= {sha256_hex(refused_data), sha256_hex(after_data)}
        refused = write_file(station.inbox / "refused.jpg", refused_data)
        wait_until(lambda: len(raised) > 0, "the injected exception")
        wait_until(lambda: logged(daemon_log, "could not be passed on"), "the logged exception")
        after = write_file(station.inbox / "after.jpg", after_data)
        processed = seconds_until(
            lambda: row_done(station, after), raised[0], "a file dropped after the exception"
        )
        # The same observer threads still run: nothing had to be restarted.
        assert watch_threads() == observers_before
        assert not logged(daemon_log, REPAIRED)
        assert not has_row(station, refused), "the refused hints reached intake some other way"
        failures = len(raised)
        refusing.clear()
        refused.write_bytes(refused_data)  # the same bytes again: fresh events, same content
        wait_until(lambda: row_done(station, refused), "the refused file, hinted again")
        wait_until(lambda: settled(station), "an idle daemon")
    report(
        "watcher death (b1): Intake.hint raises inside the watchdog handler",
        {
            "injected exceptions": failures,
            "observer threads (same ones before and after)": len(observers_before),
            "later file done after the first exception (s)": round(processed, 2),
            "watch restarts needed": 0,
        },
    )
    assert check_invariant(station, contents) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_observer_killed_by_a_handler_exception_is_restarted(
    station: Station, daemon_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping a watchdog handler ends the observer thread (FIELD-NOTES): the
    health check must see it, watch again, and rescan for what the dead watch missed."""
    killed_at: list[float] = []
    original_dispatch = daemon.intake.watcher._HintHandler.dispatch

    def dispatch_once_fatally(
        self: daemon.intake.watcher._HintHandler, event: FileSystemEvent
    ) -> None:
        if not killed_at and Path(os.fsdecode(event.src_path)).name == "killer.jpg":
            killed_at.append(time.monotonic())
            raise RuntimeError("injected fault: exception escaping the watchdog handler")
        original_dispatch(self, event)

    monkeypatch.setattr(daemon.intake.watcher._HintHandler, "dispatch", dispatch_once_fatally)
    contents: set[str] = set()
    with daemon_thread(station):
        warm_up(station, daemon_log, contents)
        observers_before = watch_threads()
        killer_data, after_data = noise_jpeg(40), noise_jpeg(41)
        contents |= {sha256_hex(killer_data), sha256_hex(after_data)}
        killer = write_file(station.inbox / "killer.jpg", killer_data)
        wait_until(lambda: bool(killed_at), "the injected fatal exception")
        resumed = seconds_until(
            lambda: logged(daemon_log, REPAIRED), killed_at[0], "the restarted watch"
        )
        assert logged(daemon_log, "observer thread died")
        wait_until(lambda: row_done(station, killer), "the file whose event killed the watch")
        # Dropped after the repair's rescan is over: only the new observer can report it.
        after = write_file(station.inbox / "after.jpg", after_data)
        dropped = time.monotonic()
        processed = seconds_until(
            lambda: row_done(station, after), dropped, "a file delivered by the new observer"
        )
        observers_after = watch_threads()
        wait_until(lambda: settled(station), "an idle daemon")
    report(
        "watcher death (b2): exception escapes the handler, observer thread dies",
        {
            "watch resumed after the exception (s)": round(resumed, 2),
            "later file done after its drop (s)": round(processed, 2),
            "observer thread replaced": observers_after.isdisjoint(observers_before),
            "file whose event was lost": "found by the rescan hint of the repair",
        },
    )
    assert observers_after and observers_after.isdisjoint(observers_before)
    assert check_invariant(station, contents) == []
