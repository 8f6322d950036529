"""An entry that will not move: retried, then quarantined instead or recorded as stuck."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from daemon.delivery.setaside import EntryFailures
from daemon.outcomes import Decision, Destination
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Arrival, ClassifiedImage, ModelInfo, PendingMove, Store

MODEL = ModelInfo("tiny", "r1", "fp32", (("a tiger", True),), 0.8, 0.5)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'tw.db'}"
    upgrade_database(url)
    return Store(create_db_engine(url))


def classified_move(store: Store, source: Path, destination: Path) -> PendingMove:
    store.record_arrivals([Arrival(str(source), "ab" * 32, 10)])
    (image_id,) = [item.id for item in store.due_images(1)]
    result = ClassifiedImage(
        image_id, 0.9, Decision.POSITIVE, {"a tiger": 0.9}, np.zeros(2, "<f4").tobytes(), 2,
        1.0, 1.0, None, None, None,
    )  # fmt: skip
    store.record_classified([result], MODEL)
    (move,) = store.pending_moves()
    store.record_intended({(move.kind, move.id): str(destination)})
    (move,) = store.pending_moves()
    return move


def test_a_destination_that_refuses_one_image_sends_it_to_quarantine(
    store: Store, tmp_path: Path
) -> None:
    source, destination = tmp_path / "in" / "a.jpg", tmp_path / "review" / "a.jpg"
    move = classified_move(store, source, destination)
    failures = EntryFailures(store, first_delay=0.0, max_attempts=2)
    error = OSError(errno.EIO, "copy's SHA-256 differs from the source", str(destination))

    failures.failed(move, error)
    assert store.pending_moves()[0].destination is Destination.REVIEW  # one retry first
    failures.failed(move, error)

    (rerouted,) = store.pending_moves()
    assert rerouted.destination is Destination.QUARANTINE
    assert rerouted.intended_path is None
    assert rerouted.reason is not None and "SHA-256 differs" in rerouted.reason
    assert store.stuck_moves() == []


def test_an_image_its_inbox_folder_will_not_let_go_is_recorded_as_stuck(
    store: Store, tmp_path: Path
) -> None:
    source, destination = tmp_path / "in" / "a.jpg", tmp_path / "review" / "a.jpg"
    move = classified_move(store, source, destination)
    failures = EntryFailures(store, first_delay=0.0, max_attempts=2)
    error = OSError(errno.EACCES, "Permission denied", str(source))  # unlink(source)

    failures.failed(move, error)
    failures.failed(move, error)

    (stuck,) = store.stuck_moves()
    assert (stuck.source_path, stuck.row_id) == (str(source), move.id)
    assert "Permission denied" in stuck.reason and "inbox side" in stuck.reason
    assert not failures.due(move)  # tried again in an hour, not in a hot loop
    progress = store.queue_progress()
    assert (progress.pending, progress.finished) == (0, 1)
    store.record_moved_many([(move.kind, move.id, str(destination))])
    assert store.stuck_moves() == []  # moved after all (a later try): no longer stuck
