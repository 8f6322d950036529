"""Store.waiting_among: an inbox path is waiting while any of its rows has not left the inbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import NoResultFound

from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Arrival, ArrivalOutcome, RowKind, Store


def make_store(tmp_path: Path) -> Store:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    return Store(create_db_engine(url))


def is_waiting(store: Store, path: str) -> bool:
    return path in store.waiting_among([path])


def two_copies(tmp_path: Path) -> tuple[str, str]:
    """Two inbox files with the same bytes. Both exist: the same bytes under a name whose first
    holder is gone would be a rename, not a duplicate."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first, second = (str(inbox / name) for name in ("a.jpg", "b.jpg"))
    for name in (first, second):
        Path(name).write_bytes(b"same bytes")
    return first, second


def test_an_unknown_path_is_not_waiting(tmp_path: Path) -> None:
    assert not is_waiting(make_store(tmp_path), "/srv/inbox/IMG_0001.JPG")


def test_a_queued_image_waits_until_its_move_is_recorded(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    path = "/srv/inbox/IMG_0001.JPG"
    assert store.record_arrivals([Arrival(path, "a" * 64, 10)]) == [ArrivalOutcome.NEW]
    assert is_waiting(store, path)
    assert not is_waiting(store, "/srv/inbox/IMG_0002.JPG")
    (image,) = store.due_images(10)
    store.record_vanished(image.id, "deleted from the inbox", path)
    assert not is_waiting(store, path)


def test_a_duplicate_waits_under_its_own_path(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first, second = two_copies(tmp_path)
    outcomes = store.record_arrivals([Arrival(first, "b" * 64, 10), Arrival(second, "b" * 64, 10)])
    assert outcomes == [ArrivalOutcome.NEW, ArrivalOutcome.DUPLICATE]
    assert is_waiting(store, second)
    (move,) = [m for m in store.pending_moves() if m.kind is RowKind.DUPLICATE]
    store.record_moved_many([(RowKind.DUPLICATE, move.id, "/srv/archive/duplicates/b.jpg")])
    assert not is_waiting(store, second)
    assert is_waiting(store, first)  # the image itself is still queued


def test_a_reject_waits_until_it_is_moved(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    path = "/srv/inbox/link.jpg"
    store.record_reject(path, "symbolic link (never followed)")
    assert is_waiting(store, path)
    (move,) = store.pending_moves()
    store.record_moved_many([(RowKind.REJECT, move.id, "/srv/quarantine/link.jpg")])
    assert not is_waiting(store, path)


def test_a_round_naming_a_missing_row_closes_none_of_its_rows(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.record_reject("/srv/inbox/a.lnk", "symbolic link (never followed)")
    store.record_reject("/srv/inbox/b.lnk", "symbolic link (never followed)")
    first, second = store.pending_moves()
    moved = [
        (RowKind.REJECT, first.id, "/srv/quarantine/a.lnk"),
        (RowKind.REJECT, second.id + 100, "/srv/quarantine/b.lnk"),  # no such row
    ]

    with pytest.raises(NoResultFound, match="1 reject row"):
        store.record_moved_many(moved)

    assert is_waiting(store, "/srv/inbox/a.lnk")  # rolled back with the round
    store.record_moved_many(moved[:1])
    assert not is_waiting(store, "/srv/inbox/a.lnk")
    assert is_waiting(store, "/srv/inbox/b.lnk")


def test_waiting_among_answers_for_many_paths_as_for_each_alone(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    queued = [f"/srv/inbox/IMG_{n:04d}.JPG" for n in range(1000)]  # more than one statement's
    store.record_arrivals([Arrival(path, f"{n:064x}", 10) for n, path in enumerate(queued)])
    store.record_reject("/srv/inbox/link.jpg", "symbolic link (never followed)")
    (first, *_) = store.due_images(1)
    store.record_vanished(first.id, "deleted from the inbox", first.path)
    asked = [*queued, "/srv/inbox/link.jpg", "/srv/inbox/unknown.jpg", queued[5]]

    found = store.waiting_among(asked)

    assert found == {path for path in asked if is_waiting(store, path)}
    assert first.path not in found
    assert "/srv/inbox/link.jpg" in found
    assert len(found) == 1000  # 999 queued images and the reject


def test_intended_paths_of_several_tables_are_recorded_and_a_missing_row_records_none(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    first, second = two_copies(tmp_path)
    store.record_arrivals([Arrival(first, "c" * 64, 10), Arrival(second, "c" * 64, 10)])
    store.record_reject("/srv/inbox/link.jpg", "symbolic link (never followed)")
    (duplicate,) = [m for m in store.pending_moves() if m.kind is RowKind.DUPLICATE]
    (reject,) = [m for m in store.pending_moves() if m.kind is RowKind.REJECT]
    wanted = {
        (RowKind.DUPLICATE, duplicate.id): "/srv/archive/duplicates/b.jpg",
        (RowKind.REJECT, reject.id): "/srv/quarantine/link.jpg",
    }

    with pytest.raises(NoResultFound, match="1 reject row"):
        store.record_intended({**wanted, (RowKind.REJECT, reject.id + 100): "/srv/q/x.jpg"})
    assert all(move.intended_path is None for move in store.pending_moves())  # rolled back

    store.record_intended(wanted)
    recorded = {(move.kind, move.id): move.intended_path for move in store.pending_moves()}
    assert recorded == wanted
