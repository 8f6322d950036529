"""sd_notify cannot hang the daemon: a $NOTIFY_SOCKET nobody drains (its queue full) costs lost
messages, never a stop; WATCHDOG=1 goes out only when systemd asked for it ($WATCHDOG_USEC, for
this PID when $WATCHDOG_PID is set)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from daemon.notify import SystemdNotifier
from tests.daemon_support import (
    make_station,
    start_daemon_process,
    stop_daemon_process,
    wait_for,
)
from tests.faults.fault_kit import (
    PROCESS_START_TIMEOUT,
    noise_jpeg,
    report,
    row_done,
    wait_until,
    write_file,
)
from tests.notify_receiver import FILLER, NotifyReceiver

pytestmark = pytest.mark.fault

# The bound this test holds the daemon to, as the SIGTERM tests do; not a duration claim.
STOP_GUARD_S = 30.0


@pytest.fixture
def full_socket(notify_receiver: NotifyReceiver) -> NotifyReceiver:
    """A socket that systemd stopped reading: full until the test drains it."""
    notify_receiver.fill()
    return notify_receiver


def test_sigterm_stops_the_daemon_while_the_notify_socket_is_full(
    tmp_path: Path,
    tiny_model_dir: Path,
    full_socket: NotifyReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(full_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # pings are wanted: each one would block
    station = make_station(tmp_path / "station", tiny_model_dir)
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    try:
        # A frame classified and moved: the daemon's threads run, whatever READY=1 did.
        frame = write_file(station.inbox / "IMG_0001.JPG", noise_jpeg(1))
        wait_until(lambda: row_done(station, frame), "the frame to be done", PROCESS_START_TIMEOUT)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_GUARD_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit {STOP_GUARD_S:.0f} s after SIGTERM: {log.read_text()[-2000:]}")
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    text = log.read_text(errors="replace")
    warnings = [line for line in text.splitlines() if "could not notify systemd" in line]
    report(
        "SIGTERM with a full $NOTIFY_SOCKET",
        {
            "datagrams queued before the daemon started": full_socket.filled,
            "SIGTERM -> exit (s)": round(seconds, 2),
            "exit code": code,
            "'could not notify' log lines": len(warnings),
        },
    )
    assert code == 0, text
    assert "daemon.service: ready in" in text  # it ran past READY=1 before the signal
    assert "received SIGTERM" in text
    assert len(warnings) == 1, warnings  # logged once, not for every ping
    assert all(message == FILLER for message in full_socket.drain())


@pytest.mark.parametrize(
    ("environment", "pings_expected"),
    [
        ({}, False),
        ({"WATCHDOG_USEC": "0"}, False),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, False),  # meant for another PID
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<ours>"}, True),
        ({"WATCHDOG_USEC": "30000000"}, True),
    ],
)
def test_watchdog_pings_only_when_systemd_asked(
    environment: dict[str, str], pings_expected: bool, notify_receiver: NotifyReceiver
) -> None:
    env = {key: value.replace("<ours>", str(os.getpid())) for key, value in environment.items()}
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(notify_receiver.path), **env})
    for _ in range(3):
        notifier.watchdog()
    notifier.stopping()
    notifier.close()
    messages = notify_receiver.messages
    print(f"\n[notify] environment {environment}: {messages}")
    assert messages == (["WATCHDOG=1"] * 3 if pings_expected else []) + ["STOPPING=1"]


def test_a_full_socket_is_logged_once_and_never_blocks(
    full_socket: NotifyReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(full_socket.path), "WATCHDOG_USEC": "1"})
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="daemon.notify"):
        for _ in range(50):
            notifier.watchdog()
        notifier.stopping()
    seconds = time.monotonic() - started
    notifier.close()
    print(f"\n[notify] 51 sends to a full socket took {seconds:.4f} s")
    assert [record.levelname for record in caplog.records] == ["WARNING"], caplog.text


def test_ready_is_sent_again_once_a_socket_full_at_start_up_drains(
    tmp_path: Path,
    tiny_model_dir: Path,
    full_socket: NotifyReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(full_socket.path))
    station = make_station(tmp_path / "station", tiny_model_dir)  # health check every 0.5 s
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    received: list[str] = []
    try:
        wait_until(lambda: "ready in" in log.read_text(), "the ready line", PROCESS_START_TIMEOUT)
        filler = full_socket.drain()  # systemd catches up: the queue drains
        received += [message for message in filler if message != FILLER]

        def ready_arrived() -> bool:
            received.extend(full_socket.drain())
            return any(message.startswith("READY=1") for message in received)

        arrived = wait_for(ready_arrived, 20)
        stop_code = stop_daemon_process(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    ready = [message for message in received if message.startswith("READY=1")]
    report(
        "READY=1 lost to a full $NOTIFY_SOCKET at start-up, the socket drained later",
        {
            "datagrams queued before the daemon started": full_socket.filled,
            "filler datagrams drained": len([message for message in filler if message == FILLER]),
            "READY=1 datagrams received after the drain": len(ready),
            "exit code after SIGTERM": stop_code,
        },
    )
    assert arrived, log.read_text(errors="replace")[-2000:]
    assert len(ready) == 1  # sent until one gets through, then never again
    assert stop_code == 0
