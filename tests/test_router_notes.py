"""A quarantine note that does not fit on a full disk is written once space returns."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.delivery.router import Router
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Store
from tests.daemon_support import make_station, mounted_tmpfs

PAGE = 4096  # tmpfs counts space in pages


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, another filesystem than the inbox's."""
    with mounted_tmpfs(tmp_path / "quarantine", "256k") as mount_point:
        yield mount_point


def fill_leaving_one_page(disk: Path) -> list[Path]:
    """Fill the disk with one-page files, then free exactly one page."""
    fillers: list[Path] = []
    while True:
        path = disk / f"filler-{len(fillers):04d}"
        try:
            path.write_bytes(b"\0" * PAGE)
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
            path.unlink(missing_ok=True)
            break
        fillers.append(path)
    fillers.pop().unlink()
    return fillers


def test_a_note_that_did_not_fit_is_written_when_space_returns(
    tmp_path: Path, tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = {"inbox": "inbox", "review": "review", "archive": "archive"}
    station = make_station(
        tmp_path / "station", tmp_path / "no-model", paths=paths | {"quarantine": str(tiny_disk)}
    )
    config = station.config()
    upgrade_database(config.database.url)
    store = Store(create_db_engine(config.database.url))
    router = Router(store, config.paths)
    source = station.inbox / "IMG_0007.JPG"
    source.write_bytes(b"x" * 100)  # one page once moved: room for the file, not its note
    store.record_reject(str(source), "cannot be read: Input/output error")
    fillers = fill_leaving_one_page(tiny_disk)

    with caplog.at_level(logging.INFO, logger="daemon.delivery.router"):
        assert router.route_pending().moved == 1
        (moved,) = tiny_disk.rglob("IMG_0007.JPG")
        note = moved.with_name(moved.name + ".txt")
        assert not note.exists()
        assert router.route_pending().moved == 0  # still full: tried again, quietly
        assert not note.exists()
        assert caplog.text.count("could not write the quarantine note") == 1

        fillers.pop().unlink()
        router.route_pending()

    assert "Input/output error" in note.read_text(encoding="utf-8")
    assert str(source) in note.read_text(encoding="utf-8")
    assert "written on a later try" in caplog.text
    assert not source.exists()
    assert [p.name for p in tiny_disk.rglob("*.txt")] == [note.name]  # no half-written leftovers
