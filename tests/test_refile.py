"""Refiling filed frames: crash settlement at start-up, and frames staff moved are left alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import Paths
from daemon.delivery.event_filing import EventFiler
from daemon.delivery.refile import NOT_WHERE_FILED, settle_refiles
from daemon.outcomes import Decision
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.refiles import RefileIntent
from daemon.storage.store import Arrival, ClassifiedImage, ModelInfo, Store
from tests.daemon_support import Station, make_station, query

MODEL = ModelInfo("tiny", "r1", "fp32", (("a tiger", True),), 0.8, 0.5)
T0 = datetime(2026, 12, 1, 3, 0, 0)


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


@pytest.fixture
def store(station: Station) -> Store:
    url = f"sqlite:///{station.db_path}"
    upgrade_database(url)
    return Store(create_db_engine(url))


def filed_frame(store: Store, paths: Paths, name: str, second: int, decision: Decision) -> Path:
    """A cam1 frame classified and filed where the router puts it; returns its path."""
    data = f"frame {name}".encode()
    sha = hashlib.sha256(data).hexdigest()
    store.record_arrivals([Arrival(f"/inbox/cam1/{name}", sha, len(data), "cam1")])
    (item,) = [queued for queued in store.due_images(100) if queued.sha256 == sha]
    score = 0.9 if decision is Decision.POSITIVE else 0.1
    at = T0 + timedelta(seconds=second)
    result = ClassifiedImage(
        item.id, score, decision, {"a tiger": score}, b"\0" * 8, 2, 1.0, 1.0, at, None, None
    )
    store.record_classified([result], MODEL)
    (move,) = [move for move in store.pending_moves() if move.id == item.id]
    roots = {Decision.POSITIVE: paths.review, Decision.UNCERTAIN: paths.uncertain}
    folder = roots.get(decision, paths.archive) / "2026-12-01" / "cam1"
    if decision is not Decision.NEGATIVE:
        folder = folder / f"event-{move.event_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    store.record_intended({(move.kind, move.id): str(folder / name)})
    store.record_moved_many([(move.kind, move.id, str(folder / name))])
    return folder / name


def test_refiles_a_crash_left_half_done_are_settled_at_start_up(
    station: Station, store: Store
) -> None:
    paths = station.config().paths
    linked, intended, untouched = (
        filed_frame(store, paths, name, second, Decision.NEGATIVE)
        for name, second in (("a.jpg", 0), ("b.jpg", 2), ("c.jpg", 4))
    )
    positive = filed_frame(store, paths, "d.jpg", 6, Decision.POSITIVE)
    event_folder = positive.parent
    # The crash: one frame linked into review but not unlinked from the archive, one recorded
    # as intended and not touched, one not begun.
    for source, moved in ((linked, True), (intended, False)):
        image_id = query(station, "SELECT id FROM images WHERE final_path = ?", str(source))[0][0]
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        target = event_folder / source.name
        intent = RefileIntent(
            int(str(image_id)), sha, str(source), str(target), Decision.POSITIVE, "x"
        )
        store.record_refile_intent(intent)
        if moved:
            os.link(source, target)

    assert settle_refiles(store, paths) == 2
    assert EventFiler(store, paths).file_events() == 0

    names = {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}
    assert {path.name for path in event_folder.iterdir()} == names
    assert not list(paths.archive.rglob("*.jpg"))
    finals = query(station, "SELECT final_path, decision FROM images ORDER BY id")
    assert finals == [(str(event_folder / name), "positive") for name in sorted(names)]
    assert query(station, "SELECT state, note FROM refiles") == [("done", None)] * 3
    assert untouched.name in {
        Path(str(p)).name for (p,) in query(station, "SELECT final_path FROM refiles")
    }
    assert store.events_to_file() == []


def test_a_frame_staff_moved_away_is_recorded_and_left_alone(
    station: Station, store: Store, tmp_path: Path
) -> None:
    paths = station.config().paths
    archived = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    taken = tmp_path / "staff-desk" / "a.jpg"
    taken.parent.mkdir()
    archived.rename(taken)
    filed_frame(store, paths, "b.jpg", 2, Decision.POSITIVE)

    assert EventFiler(store, paths).file_events() == 0

    assert taken.read_bytes() == b"frame a.jpg"
    assert query(station, "SELECT state, final_path, note FROM refiles") == [
        ("done", None, NOT_WHERE_FILED)
    ]
    assert query(
        station, "SELECT final_path, decision FROM images WHERE original_name = 'a.jpg'"
    ) == [(str(archived), "negative")]
    assert store.events_to_file() == []  # recorded once, not retried every round


def test_while_a_frame_its_folder_holds_keeps_the_event_open_nothing_is_noted_again(
    station: Station, store: Store, tmp_path: Path
) -> None:
    """Hostile review F2: with an event held open, the frame staff took away got a new refiles
    row and warning at every routing tick (19, 38, 57 rows after 10, 20, 30 s)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a folder refuse root's unlinks")
    paths = station.config().paths
    taken = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    held = filed_frame(store, paths, "c.jpg", 1, Decision.NEGATIVE)
    taken.rename(tmp_path / "a.jpg")
    locked = subprocess.run(["chattr", "+i", str(held.parent)], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {locked.stderr.strip()}")
    try:
        filed_frame(store, paths, "b.jpg", 2, Decision.POSITIVE)
        filer = EventFiler(store, paths)
        waiting = [filer.file_events() for _ in range(5)]
    finally:
        subprocess.run(["chattr", "-i", str(held.parent)], check=True)

    assert waiting == [0] * 5  # the held frame waits alone: nothing pauses the station
    notes = query(station, "SELECT source_path, note FROM refiles ORDER BY id")
    assert notes == [(str(taken), NOT_WHERE_FILED), (str(held), notes[1][1])]
    assert "will retry" in str(notes[1][1])
    assert held.exists() and len(store.events_to_file()) == 1  # still owed, tried later


def test_a_frame_file_that_will_not_move_waits_alone(station: Station, store: Store) -> None:
    """Second hostile review g4: an immutable frame file (its folder fine) failed link() with
    EPERM, was taken for a destination refusing every file, and paused the whole station."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a file refuse root")
    paths = station.config().paths
    held = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    locked = subprocess.run(["chattr", "+i", str(held)], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i is not supported here: {locked.stderr.strip()}")
    try:
        filed_frame(store, paths, "b.jpg", 2, Decision.POSITIVE)
        waiting = EventFiler(store, paths).file_events()
    finally:
        subprocess.run(["chattr", "-i", str(held)], check=True)

    assert waiting == 0  # nothing pauses: the frame waits alone
    assert held.exists() and len(store.events_to_file()) == 1


def test_a_frame_staff_put_back_is_promoted_when_its_event_changes_again(
    station: Station, store: Store, tmp_path: Path
) -> None:
    """Second hostile review g8: a frame left alone (taken away during a promotion) was
    skipped for an hour even after staff put it back, and its event marked filed without it."""
    paths = station.config().paths
    archived = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    away = tmp_path / "a.jpg"
    archived.rename(away)
    filed_frame(store, paths, "b.jpg", 2, Decision.POSITIVE)
    filer = EventFiler(store, paths)
    assert filer.file_events() == 0  # a.jpg left alone, noted
    away.rename(archived)  # staff put it back
    filed_frame(store, paths, "c.jpg", 3, Decision.POSITIVE)  # the event changes again
    assert filer.file_events() == 0

    finals = dict(query(station, "SELECT original_name, final_path FROM images"))
    event_folder = Path(str(finals["b.jpg"])).parent
    assert finals["a.jpg"] == str(event_folder / "a.jpg")
    assert (event_folder / "a.jpg").read_bytes() == b"frame a.jpg"
    assert store.events_to_file() == []


def test_a_taken_name_in_the_event_folder_is_never_overwritten(
    station: Station, store: Store
) -> None:
    paths = station.config().paths
    archived = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    positive = filed_frame(store, paths, "b.jpg", 2, Decision.POSITIVE)
    squatter = positive.parent / "a.jpg"
    squatter.write_bytes(b"something staff put there")

    assert EventFiler(store, paths).file_events() == 0

    assert squatter.read_bytes() == b"something staff put there"
    [(final,)] = query(station, "SELECT final_path FROM images WHERE original_name = 'a.jpg'")
    assert Path(str(final)).parent == positive.parent and Path(str(final)) != squatter
    assert Path(str(final)).read_bytes() == b"frame a.jpg"
    assert not archived.exists()


def test_an_uncertain_frame_lifts_its_archived_event_mates_to_uncertain_then_review(
    station: Station, store: Store
) -> None:
    paths = station.config().paths
    archived = filed_frame(store, paths, "a.jpg", 0, Decision.NEGATIVE)
    filed_frame(store, paths, "b.jpg", 2, Decision.UNCERTAIN)

    assert EventFiler(store, paths).file_events() == 0

    [(event_id,)] = query(station, "SELECT id FROM events")
    uncertain = paths.uncertain / "2026-12-01" / "cam1" / f"event-{event_id}" / "a.jpg"
    assert (archived.exists(), uncertain.read_bytes()) == (False, b"frame a.jpg")
    assert query(station, "SELECT decision FROM images WHERE original_name = 'a.jpg'") == [
        ("uncertain",)
    ]
    filed_frame(store, paths, "c.jpg", 4, Decision.POSITIVE)

    assert EventFiler(store, paths).file_events() == 0

    review = paths.review / "2026-12-01" / "cam1" / f"event-{event_id}"
    assert sorted(path.name for path in review.iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert not list(paths.uncertain.rglob("*.jpg"))
