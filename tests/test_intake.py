"""Intake records a drop in slices: one transaction per slice, duplicates seen within one."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from daemon.intake import arrivals as intake_module
from daemon.intake.arrivals import Intake
from daemon.intake.names import NameFilter
from daemon.intake.stability import StabilityTracker
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Arrival, ArrivalOutcome, Store


class CountingStore(Store):
    """The real store, remembering the size of each intake transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(create_db_engine(url))
        self.slices: list[int] = []

    def record_arrivals(self, arrivals: Sequence[Arrival]) -> list[ArrivalOutcome]:
        outcomes = super().record_arrivals(arrivals)
        self.slices.append(len(arrivals))
        return outcomes


@pytest.fixture(autouse=True)
def no_time_slicing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slice by count only, so a slow CI machine cannot split a slice by the clock."""
    monkeypatch.setattr(intake_module, "COMMIT_INTERVAL_SECONDS", 3600.0)


def _intake(tmp_path: Path) -> tuple[Intake, CountingStore, Path, list[int]]:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    store = CountingStore(url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    wakes: list[int] = []
    intake = Intake(
        store=store,
        tracker=StabilityTracker(0.0),
        name_filter=NameFilter([".jpg"]),
        inboxes=[inbox],
        on_queued=lambda: wakes.append(1),
    )
    return intake, store, inbox, wakes


def _settle(intake: Intake) -> int:
    """Two looks make a path stable (quiet period 0); returns what the second look recorded."""
    intake.rescan()
    intake.run_once()
    intake.rescan()
    return intake.run_once()


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql).fetchall()


def test_a_large_drop_is_committed_in_slices(tmp_path: Path) -> None:
    intake, store, inbox, wakes = _intake(tmp_path)
    count = 2 * intake_module.ARRIVALS_PER_COMMIT + 5
    for index in range(count):
        (inbox / f"IMG_{index:04d}.jpg").write_bytes(f"frame {index}".encode())

    assert _settle(intake) == count
    assert sum(store.slices) == count
    limit = intake_module.ARRIVALS_PER_COMMIT
    assert store.slices == [limit, limit, 5]  # not one transaction per file, nor one for all
    assert len(wakes) == len(store.slices)  # the worker hears of each slice as it lands
    queued = _rows(tmp_path / "tigerwatch.db", "SELECT count(*) FROM images WHERE state='queued'")
    assert queued == [(count,)]


def test_same_bytes_twice_in_one_slice_make_one_image_and_one_duplicate(tmp_path: Path) -> None:
    intake, store, inbox, _ = _intake(tmp_path)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (inbox / name).write_bytes(b"the same frame")
    (inbox / "d.jpg").write_bytes(b"another frame")

    assert _settle(intake) == 4
    assert store.slices == [4]
    db = tmp_path / "tigerwatch.db"
    assert _rows(db, "SELECT count(*) FROM images") == [(2,)]
    assert _rows(db, "SELECT count(*) FROM duplicates") == [(2,)]


def test_nothing_is_recorded_twice_when_the_same_files_are_hinted_again(tmp_path: Path) -> None:
    intake, store, inbox, _ = _intake(tmp_path)
    for index in range(3):
        (inbox / f"IMG_{index}.jpg").write_bytes(bytes([index]) * 100)
    assert _settle(intake) == 3

    assert _settle(intake) == 0  # still in the inbox, already queued: nothing new
    assert store.slices == [3]  # known paths are not even hashed again
    assert _rows(tmp_path / "tigerwatch.db", "SELECT count(*) FROM images") == [(3,)]
    assert _rows(tmp_path / "tigerwatch.db", "SELECT count(*) FROM duplicates") == [(0,)]


@pytest.mark.parametrize("limit", [1, 2])
def test_slice_size_follows_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    monkeypatch.setattr(intake_module, "ARRIVALS_PER_COMMIT", limit)
    intake, store, inbox, _ = _intake(tmp_path)
    for index in range(5):
        (inbox / f"IMG_{index}.jpg").write_bytes(bytes([index]) * 10)
    assert _settle(intake) == 5
    assert max(store.slices) == limit
    assert sum(store.slices) == 5


def test_an_inbox_root_swapped_for_a_symlink_is_left_alone(tmp_path: Path) -> None:
    intake, store, inbox, _ = _intake(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "IMG_0001.jpg").write_bytes(b"frame")
    inbox.rmdir()
    inbox.symlink_to(elsewhere, target_is_directory=True)

    assert _settle(intake) == 0
    assert store.slices == []
    assert _rows(tmp_path / "tigerwatch.db", "SELECT count(*) FROM rejects") == [(0,)]
    assert inbox.is_symlink()


def test_a_slice_also_ends_when_its_interval_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake_module, "COMMIT_INTERVAL_SECONDS", 0.0)
    intake, store, inbox, wakes = _intake(tmp_path)
    for index in range(3):
        (inbox / f"IMG_{index}.jpg").write_bytes(bytes([index]) * 10)
    assert _settle(intake) == 3
    assert store.slices == [1, 1, 1]
    assert len(wakes) == 3
