"""Hostile review of the work ahead (daemon/speculation.py, commit 9485063): attacks on the
real daemon and the real parts. Tests marked DEFECT fail on 9485063."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

import daemon.speculation as speculation_module
from daemon.classify.classifier import Classification, ClipClassifier
from daemon.decode.jobs import DecodeOutcome
from daemon.speculation import WAIT, Foreseen, Speculation
from tests.daemon_support import (
    SETTLE_TIMEOUT,
    Station,
    check_invariant,
    count,
    daemon_thread,
    make_station,
    noise_jpeg,
    query,
    settled,
    sha256_hex,
    wait_until,
    write_file,
)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _claims(monkeypatch: pytest.MonkeyPatch, waited: threading.Event | None = None) -> list[object]:
    """Every claim's answer, in order; `waited` is set at the first WAIT."""
    claims: list[object] = []
    claim = Speculation.claim

    def recording(self: Speculation, path: str, sha256: str) -> object:
        found = claim(self, path, sha256)
        claims.append(found)
        if found == WAIT and waited is not None:
            waited.set()
        return found

    monkeypatch.setattr(Speculation, "claim", recording)
    return claims


def _filed(station: Station) -> int:
    return len(query(station, "SELECT id FROM images WHERE state = 'done'"))


# --- DEFECT: a parked row is taken twice ---------------------------------------------------


def test_a_row_recorded_while_its_work_ahead_runs_is_classified_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEFECT on 9485063. A row recorded while its frame is being classified ahead is parked;
    when the batch ends, _top_up takes the parked row's Foreseen verdict (kept in
    self._foreseen, recorded only at the end of the top-up), and then _take_due asks the
    store for due rows excluding inflight/parked/waiting/classifying, but not the rows just
    taken as foreseen: the same row, still queued in the database, is taken again, its claim
    is None, and it is decoded and classified a second time (a second classifications row,
    and a decode of a file the routing may have moved meanwhile)."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    parked = threading.Event()
    claims = _claims(monkeypatch, parked)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    name = "IMG_0101.JPG"
    real = speculation_module.classify_decoded

    def slow_ahead(
        classifier: ClipClassifier, outcomes: Sequence[DecodeOutcome]
    ) -> tuple[list[Classification], float]:
        # The batch ahead ends only once the worker took the row while it ran: it is parked.
        parked.wait(SETTLE_TIMEOUT)
        return real(classifier, outcomes)

    monkeypatch.setattr(speculation_module, "classify_decoded", slow_ahead)
    data = noise_jpeg(101, (64, 48))
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        write_file(station.inbox / name, data)
        wait_until(lambda: settled(station) and _filed(station) == 1, "the frame filed")

    assert WAIT in claims  # the row was parked while its work ahead ran
    assert any(isinstance(found, Foreseen) for found in claims)
    assert [found for found in claims if found != WAIT and not isinstance(found, Foreseen)] == []
    assert count(station, "classifications") == 1
    assert query(station, "SELECT decision FROM images")[0][0] != "vanished"
    assert check_invariant(station, {sha256_hex(data)}) == []
