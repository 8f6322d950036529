"""The model raising on a batch (a bug, out of memory): one bad frame cannot hold up the rest,
and a model that fails on everything ends the daemon for systemd to restart, costing no frame.

The failure is injected at the lane's boundary (Worker._classify), because no real frame makes
the real model raise: the decoders always hand it views of the right shape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import daemon.worker
from daemon.config import load_config
from daemon.service import run_daemon
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
    sha256_of,
    without_work_ahead,
)
from tests.faults.fault_kit import noise_jpeg, wait_until, write_file

pytestmark = pytest.mark.fault

LANES = {"batch_size": 2, "threads": 2, "parallel_batches": 2}


def failing_on(monkeypatch: pytest.MonkeyPatch, fails: Callable[[str], bool]) -> None:
    """Batches holding a frame whose name `fails` raise inside the lane."""
    original = daemon.worker.Worker._classify

    def classify(self: daemon.worker.Worker, good: list[daemon.worker.Decoded]) -> object:
        if any(fails(Path(decoded.item.path).name) for decoded in good):
            raise RuntimeError("injected model failure")
        return original(self, good)

    monkeypatch.setattr(daemon.worker.Worker, "_classify", classify)
    # The row's own batch is what fails; work ahead failing costs nothing (test_speculation_review).
    without_work_ahead(monkeypatch)


def station_with_lanes(tmp_path: Path, model_dir: Path) -> Station:
    return make_station(
        tmp_path / "station", model_dir, model={"name_or_path": str(model_dir), **LANES}
    )


def test_a_frame_the_model_fails_on_is_quarantined_and_the_rest_are_classified(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    station = station_with_lanes(tmp_path, tiny_model_dir)
    failing_on(monkeypatch, lambda name: name == "IMG_0003.JPG")
    frames = [write_file(tmp_path / f"IMG_{n:04d}.JPG", noise_jpeg(n)) for n in range(8)]
    contents = {sha256_of(frame) for frame in frames}
    with daemon_thread(station):  # exits 0 on leaving: the worker thread never died
        for frame in frames:
            frame.rename(station.inbox / frame.name)
        wait_until(lambda: settled(station), "every frame filed")
    rows = dict(query(station, "SELECT original_name, decision FROM images"))
    assert rows.pop("IMG_0003.JPG") == "quarantined"
    assert set(rows.values()) <= {"positive", "uncertain", "negative"} and len(rows) == 7
    (error,) = query(station, "SELECT last_error FROM images WHERE decision = 'quarantined'")
    assert "the model failed on this frame" in str(error[0])
    assert [path.name for path in (station.root / "quarantine").rglob("*.JPG")] == ["IMG_0003.JPG"]
    assert check_invariant(station, contents) == []


# The worker thread ends with the model's exception: that is the point.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_model_that_fails_on_everything_ends_the_daemon_and_costs_no_frame(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    station = station_with_lanes(tmp_path, tiny_model_dir)
    failing_on(monkeypatch, lambda name: True)
    for n in range(6):
        write_file(station.inbox / f"IMG_{n:04d}.JPG", noise_jpeg(n))
    ended: list[object] = []

    def run() -> None:
        try:
            ended.append(run_daemon(load_config(station.config_path)))
        except SystemExit as exit_:
            ended.append(exit_.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert ended == [1], "the supervisor exits 1 once the worker thread has died"
    states = query(station, "SELECT state, decision, attempts FROM images")
    assert len(states) == 6
    assert all(row == ("queued", None, 0) for row in states), states
