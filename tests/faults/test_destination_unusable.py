"""A destination folder that cannot be used (a plain file where today's dated folder goes) pauses
the flow: the routing thread stays alive and no classified frame is rerouted to quarantine."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
)
from tests.faults.fault_kit import block_dated_folders, noise_jpeg, report, wait_until, write_file

pytestmark = pytest.mark.fault


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def test_a_dated_folder_that_is_a_file_pauses_and_nothing_goes_to_quarantine(
    station: Station, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    blockers = block_dated_folders(station.root / "archive")
    frames = [write_file(station.inbox / f"f{n}.jpg", noise_jpeg(n)) for n in range(3)]
    with daemon_thread(station):  # exits 0 on leaving: no thread died
        wait_until(
            lambda: any("wait" in record.getMessage() for record in caplog.records),
            "the routing to report that files wait",
        )
        # Longer than the per-entry tries take (0.5 s doubling, 5 tries): a frame treated as
        # the entry's fault would be in quarantine by now.
        time.sleep(10)
        waiting = sum(frame.exists() for frame in frames)
        quarantined = query(station, "SELECT count(*) FROM images WHERE decision='quarantined'")
        for blocker in blockers:
            blocker.unlink()
        wait_until(lambda: settled(station), "the frames to be archived once the folder is free")
    decisions = sorted(str(d) for (d,) in query(station, "SELECT decision FROM images"))
    report(
        "unusable destination folder",
        {
            "frames waiting in the inbox meanwhile": waiting,
            "quarantined": quarantined[0][0],
            "decisions at the end": decisions,
        },
    )
    assert waiting == len(frames)
    assert quarantined == [(0,)]
    assert "quarantined" not in decisions
    assert check_invariant(station) == []
