"""A queue that makes no progress withholds WATCHDOG=1 and says why in `tigerwatch status`.

The daemon runs in a thread of this process with a real sd_notify socket (a datagram socket
this test reads) and systemd's watchdog variables set; the model is made to hang, so work is
pending and nothing finishes. The old health check kept pinging (it only looked at the
worker's own clock, with a fixed 300 s).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.classify.classifier import ClipClassifier
from daemon.config import Watch as WatchSettings
from tests.daemon_support import (
    daemon_thread,
    images_done,
    make_station,
    tigerwatch_status,
)
from tests.faults.fault_kit import (
    SETTLE_TIMEOUT,
    block_dated_folders,
    count,
    noise_jpeg,
    report,
    wait_until,
    write_file,
)
from tests.notify_receiver import NotifyReceiver

STALL_SECONDS = 2.0
HEALTH_SECONDS = 0.3


def watch_settings() -> dict[str, object]:
    watch: dict[str, object] = {
        "quiet_seconds": 0.3,
        "rescan_interval_seconds": 60,
        "health_check_seconds": HEALTH_SECONDS,
    }
    # Only where the daemon knows the key: a daemon without it then shows its own behaviour
    # instead of refusing the config.
    if "stall_seconds" in WatchSettings.model_fields:
        watch["stall_seconds"] = STALL_SECONDS
    return watch


@pytest.fixture
def notify_socket(
    notify_receiver: NotifyReceiver, monkeypatch: pytest.MonkeyPatch
) -> NotifyReceiver:
    """systemd asks this process for watchdog pings (WatchdogSec=120)."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    return notify_receiver


@pytest.fixture
def hanging_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The model blocks until the returned event is set (always set on teardown)."""
    release = threading.Event()
    original = ClipClassifier.classify_pixels

    def hang(self: ClipClassifier, *args: object, **kwargs: object) -> object:
        release.wait(timeout=300)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ClipClassifier, "classify_pixels", hang)
    yield release
    release.set()


@pytest.mark.fault
def test_a_queue_without_progress_withholds_the_watchdog_and_says_why(
    tmp_path: Path,
    tiny_model_dir: Path,
    notify_socket: NotifyReceiver,
    hanging_model: threading.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch=watch_settings(),
    )
    with daemon_thread(station):
        wait_until(lambda: notify_socket.pings_since(0.0) >= 2, "watchdog pings while idle")
        for number in range(3):
            write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(number))
        wait_until(lambda: count(station, "images") == 3, "the frames to be queued")
        # Well past stall_seconds (and a few health checks) with the model still hanging.
        time.sleep(STALL_SECONDS + 5 * HEALTH_SECONDS)
        stalled_at = notify_socket.mark()
        # Several health checks pass while the model still hangs: none may ping.
        time.sleep(STALL_SECONDS + 5 * HEALTH_SECONDS)
        pings_while_stalled = notify_socket.pings_since(stalled_at)
        status = tigerwatch_status(station)
        hanging_model.set()
        wait_until(lambda: images_done(station) == 3, "the backlog after the model recovers")
        resumed_at = notify_socket.mark()
        wait_until(lambda: notify_socket.pings_since(resumed_at) >= 1, "pings after recovery")
    lines = status.splitlines()
    progress_line = next((line for line in lines if line.startswith("progress:")), "(no line)")
    report(
        "the model hangs with 3 frames queued (stall_seconds 2)",
        {
            "WATCHDOG=1 while stalled": pings_while_stalled,
            "tigerwatch status": progress_line,
        },
    )
    assert pings_while_stalled == 0
    assert "withholding the watchdog ping" in caplog.text
    assert "stalled: 3 entries waiting and nothing finished" in progress_line, status


@pytest.mark.fault
def test_the_watchdog_keeps_pinging_while_work_moves(
    tmp_path: Path,
    tiny_model_dir: Path,
    notify_socket: NotifyReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames arriving steadily for longer than stall_seconds never count as a stall."""
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch=watch_settings(),
    )
    with daemon_thread(station):
        wait_until(lambda: notify_socket.pings_since(0.0) >= 1, "the first watchdog ping")
        started = notify_socket.mark()
        for number in range(12):
            write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(number))
            time.sleep(0.5)
        wait_until(lambda: images_done(station) == 12, "the frames", SETTLE_TIMEOUT)
        pings = notify_socket.pings_since(started)
    withheld = caplog.text.count("withholding the watchdog ping")
    report(
        "12 frames over 6 s (stall_seconds 2)", {"WATCHDOG=1 pings": pings, "withheld": withheld}
    )
    assert pings > 0
    assert withheld == 0


@pytest.mark.fault
def test_a_destination_pause_is_waiting_not_a_stall(
    tmp_path: Path,
    tiny_model_dir: Path,
    notify_socket: NotifyReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A paused destination longer than stall_seconds keeps the pings: the daemon retries it,
    and a restart would only reload the model to wait again (a restart loop at a station)."""
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch=watch_settings(),
    )
    blockers = block_dated_folders(station.root / "archive")
    with daemon_thread(station):
        wait_until(lambda: notify_socket.pings_since(0.0) >= 1, "the first watchdog ping")
        for number in range(3):
            write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(number))
        wait_until(lambda: "wait" in caplog.text, "the moves to pause")
        paused_at = notify_socket.mark()
        time.sleep(STALL_SECONDS + 10 * HEALTH_SECONDS)
        pings_while_paused = notify_socket.pings_since(paused_at)
        for blocker in blockers:
            blocker.unlink()
        wait_until(lambda: images_done(station) == 3, "the frames once the archive takes files")
    report(
        "a paused archive for longer than stall_seconds 2",
        {"WATCHDOG=1 while paused": pings_while_paused},
    )
    assert pings_while_paused > 0
    assert "withholding the watchdog ping" not in caplog.text
