"""`tigerwatch status` on a known drain: rate, ETA, waiting per inbox, oldest stuck, last error."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from daemon.status import gather_status
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.schema import (
    Image,
    ImageDecision,
    ImageState,
    MoveState,
    Reject,
    RowKind,
    StuckMove,
)
from daemon.storage.store import Store
from tests.daemon_support import REPO_ROOT, Station, make_station


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        paths={
            "inbox": ["inbox", "ftp"],
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
        },
    )
    (station.root / "ftp").mkdir()
    upgrade_database(f"sqlite:///{station.db_path}")
    return station


def image(
    path: Path, now: datetime, *, done_minutes_ago: float | None = None, error: str | None = None
) -> Image:
    done_at = None if done_minutes_ago is None else now - timedelta(minutes=done_minutes_ago)
    return Image(
        sha256=hashlib.sha256(str(path).encode()).hexdigest(),
        original_path=str(path),
        first_seen_at=now - timedelta(minutes=30),
        state=ImageState.QUEUED if done_at is None else ImageState.DONE,
        decision=None if done_at is None else ImageDecision.NEGATIVE,
        done_at=done_at,
        last_error=error,
    )


def write_rows(station: Station, rows: list[object]) -> dict[str, int]:
    """Inserts the rows; the ids of the images by path."""
    engine = create_engine(f"sqlite:///{station.db_path}")
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)
        session.flush()
        ids = {str(row.original_path): row.id for row in rows if isinstance(row, Image)}
    engine.dispose()
    return ids


def status(station: Station, *options: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "-c", str(station.config_path), *options],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    return run.stdout


def test_status_reports_the_drain_the_backlog_and_what_holds_it(station: Station) -> None:
    now = datetime.now(UTC)  # here, not at import: the test may run minutes after collection
    inbox, ftp = station.root / "inbox", station.root / "ftp"
    rows: list[object] = []
    rows += [image(inbox / f"done_{n}.jpg", now, done_minutes_ago=0.5 + 0.2 * n) for n in range(30)]
    rows += [image(inbox / f"old_{n}.jpg", now, done_minutes_ago=25) for n in range(5)]  # before
    rows += [image(inbox / f"wait_{n}.jpg", now) for n in range(40)]
    rows += [image(ftp / f"wait_{n}.jpg", now) for n in range(20)]
    rows += [image(inbox / "had_error.jpg", now, done_minutes_ago=5, error="decoder process died")]
    rows += [
        Reject(
            source_path=str(ftp / "half.jpg"),
            reason="truncated JPEG (no end-of-image marker)",
            arrived_at=now - timedelta(minutes=3),
            state=MoveState.DONE,
            done_at=now - timedelta(minutes=2),
        )
    ]
    stuck = [image(ftp / "locked.jpg", now), image(inbox / "fifo.jpg", now)]
    ids = write_rows(station, rows + stuck)
    write_rows(
        station,
        [
            StuckMove(
                kind=RowKind.IMAGE,
                row_id=ids[str(inbox / "fifo.jpg")],
                source_path=str(inbox / "fifo.jpg"),
                reason="not a regular file",
                since=now - timedelta(minutes=10),
            ),
            StuckMove(
                kind=RowKind.IMAGE,
                row_id=ids[str(ftp / "locked.jpg")],
                source_path=str(ftp / "locked.jpg"),
                reason="permission denied",
                since=now - timedelta(minutes=40),
            ),
        ],
    )

    report = json.loads(status(station, "--json"))
    text = status(station)
    print(text)

    # By hand: 30 frames + the error frame + the reject left the inboxes in the last 10 min,
    # the first of them 6.3 min before `now` (the frame done 0.5 + 0.2 * 29 min ago).
    figures = figures_at(station, now)
    assert figures["drained_in_window"] == report["drained_in_window"] == 32
    assert figures["drain_minutes"] == 6.3
    assert figures["drain_per_minute"] == round(32 / 6.3, 2)  # 5.08
    assert figures["backlog"] == report["backlog"] == 60  # stuck entries wait for a person
    assert figures["eta_seconds"] == pytest.approx(60 / (32 / 6.3) * 60)  # 709 s
    assert report["waiting_by_inbox"] == {str(inbox): 40, str(ftp): 20}
    assert [entry["reason"] for entry in report["stuck"]] == [
        "permission denied",  # the oldest first
        "not a regular file",
    ]
    assert report["last_error"]["path"] == str(ftp / "half.jpg")
    assert report["last_error"]["reason"].startswith("truncated JPEG")
    assert report["watchdog"] == "sent when systemd asks"
    # The command ran a few seconds after `now`: the span, and so the rate, moved a little.
    assert re.search(
        r"32 in the last 10 min \(5\.\d+/min over 6\.\d min\); 60 waiting, done in about 12 min",
        text,
    ), text
    assert f"waiting:        {inbox} 40, {ftp} 20" in text
    assert "last error:     " in text and "half.jpg: truncated JPEG" in text


def test_a_drain_that_began_two_minutes_ago_is_timed_from_its_start(station: Station) -> None:
    """A card copied in: 300 frames out in the 2 minutes since the daemon began on it, 900
    waiting. Over the whole 10-minute window that would look like 30/min and 30 min to go."""
    now = datetime.now(UTC)
    inbox = station.root / "inbox"
    rows: list[object] = [
        image(inbox / f"done_{n}.jpg", now, done_minutes_ago=2.0 * n / 299) for n in range(300)
    ]
    rows += [image(inbox / f"wait_{n}.jpg", now) for n in range(900)]
    write_rows(station, rows)

    figures = figures_at(station, now)

    assert (figures["drained_in_window"], figures["drain_minutes"]) == (300, 2.0)
    assert figures["drain_per_minute"] == 150.0
    assert figures["eta_seconds"] == pytest.approx(900 / 150 * 60)  # 6 min, not 30


def test_a_single_early_batch_counts_over_at_least_a_minute(station: Station) -> None:
    now = datetime.now(UTC)
    inbox = station.root / "inbox"
    rows: list[object] = [image(inbox / f"d{n}.jpg", now, done_minutes_ago=0.1) for n in range(8)]
    write_rows(station, [*rows, *(image(inbox / f"w{n}.jpg", now) for n in range(16))])

    figures = figures_at(station, now)

    assert (figures["drain_minutes"], figures["drain_per_minute"]) == (1.0, 8.0)
    assert figures["eta_seconds"] == pytest.approx(16 / 8 * 60)


def figures_at(station: Station, now: datetime) -> dict[str, Any]:
    """The report as status computes it at `now` exactly (the command runs seconds later)."""
    engine = create_db_engine(f"sqlite:///{station.db_path}")
    try:
        return gather_status(Store(engine), now=now).as_dict()
    finally:
        engine.dispose()


def test_status_of_a_queue_that_does_not_drain(station: Station) -> None:
    now = datetime.now(UTC)
    write_rows(station, [image(station.root / "inbox" / f"IMG_{n}.JPG", now) for n in range(10)])

    report = json.loads(status(station, "--json"))
    text = status(station)
    print(text)

    assert report["drained_in_window"] == 0
    assert report["eta_seconds"] is None
    assert report["backlog"] == 10
    assert str(report["watchdog"]).startswith("withheld: stalled: 10 entries waiting")
    assert "10 waiting, no estimate while nothing drains" in text
    assert report["last_error"] is None


def test_the_last_error_names_its_file_once(station: Station) -> None:
    """Decode errors are stored as "<path>: <reason>"; status used to print the path twice."""
    now = datetime.now(UTC)
    bad = station.root / "inbox" / "BAD_0026.JPG"
    error = f"{bad}: image file is truncated (110 bytes not processed)"
    write_rows(station, [image(bad, now, done_minutes_ago=1, error=error)])

    line = next(line for line in status(station).splitlines() if line.startswith("last error:"))
    report = json.loads(status(station, "--json"))

    assert report["last_error"]["reason"] == "image file is truncated (110 bytes not processed)"

    assert line.endswith(f" {bad}: image file is truncated (110 bytes not processed)")
    assert line.count(str(bad)) == 1
