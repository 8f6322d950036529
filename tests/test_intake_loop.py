"""The intake thread's loop: a hinted file is taken when its quiet period ends, not at a tick."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from daemon.intake import loop as loop_module
from daemon.intake.arrivals import Intake
from daemon.intake.loop import intake_loop
from daemon.intake.names import NameFilter
from daemon.intake.stability import StabilityTracker
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Store

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


def test_the_loop_stops_within_a_tick_without_any_hint(tmp_path: Path) -> None:
    db = tmp_path / "tigerwatch.db"
    upgrade_database(f"sqlite:///{db}")
    intake = Intake(
        store=Store(create_db_engine(f"sqlite:///{db}")),
        tracker=StabilityTracker(QUIET),
        name_filter=NameFilter([".jpg"]),
        inboxes=[tmp_path],
        on_queued=lambda: None,
    )
    stop = threading.Event()
    thread = threading.Thread(target=intake_loop, args=(intake, stop, 3600.0))
    thread.start()
    time.sleep(0.05)
    stop.set()
    thread.join(PATIENCE)
    assert not thread.is_alive()
