"""How the worker sizes its batches at the end of a burst, end to end (review hX7 of 467528e)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

import daemon.worker
from daemon.classify.classifier import Classification, ClipClassifier
from daemon.decode.jobs import DecodeOutcome
from daemon.storage.store import QueuedImage
from daemon.worker import Decoded
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
    sha256_of,
    wait_until,
    without_work_ahead,
    write_file,
)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@dataclass
class Probe:
    """Holds one file's decode until released, and records the views of every model batch."""

    slow_name: str
    batches: list[int] = field(default_factory=list)
    slow_submitted: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[Probe]:
    found = Probe(slow_name="IMG_0000.JPG")
    original_submit = daemon.worker.Worker._submit
    classify_pixels = ClipClassifier.classify_pixels

    def held_submit(self: daemon.worker.Worker, item: QueuedImage) -> Future[DecodeOutcome]:
        future = original_submit(self, item)
        if Path(item.path).name != found.slow_name:
            return future
        held: Future[DecodeOutcome] = Future()

        def forward() -> None:
            found.release.wait(SETTLE_TIMEOUT)
            held.set_result(future.result())

        threading.Thread(target=forward, daemon=True).start()
        found.slow_submitted.set()
        return held

    def recording(
        self: ClipClassifier,
        pixels: Sequence[npt.NDArray[np.uint8]],
        infrared: Sequence[bool] | None = None,
    ) -> list[Classification]:
        found.batches.append(sum(len(levels) for levels in pixels))
        return classify_pixels(self, pixels, infrared)

    monkeypatch.setattr(daemon.worker.Worker, "_submit", held_submit)
    # No work ahead: the held frame must reach _submit, not be taken as classified ahead.
    without_work_ahead(monkeypatch)
    monkeypatch.setattr(ClipClassifier, "classify_pixels", recording)
    yield found
    found.release.set()


def two_lane_station(
    tmp_path: Path,
    tiny_model_dir: Path,
    frames: int,
    *,
    view: str = "center",
    size: Callable[[int], tuple[int, int]] = lambda n: (64, 48),
) -> tuple[Station, list[Path]]:
    """A 2-lane station, batch 16 views, with `frames` frames in the inbox before the start
    (queued in one intake commit) and a long batch wait (only the held decode ends it)."""
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={
            "name_or_path": str(tiny_model_dir),
            "batch_size": 16,
            "threads": 2,
            "parallel_batches": 2,
            "view": view,
        },
        worker={
            "batch_max_wait_seconds": 60,
            "retry_delay_seconds": 0.2,
            "max_decode_attempts": 2,
            "destination_retry_seconds": 0.5,
        },
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    sources = [
        write_file(outside / f"IMG_{n:04d}.JPG", noise_jpeg(n, size(n))) for n in range(frames)
    ]
    for source in sources:
        shutil.copy(source, station.inbox / source.name)
    return station, sources


def test_the_last_frames_of_a_burst_are_shared_between_two_lanes(
    tmp_path: Path, tiny_model_dir: Path, probe: Probe
) -> None:
    # 12 views ready, nothing decoding, nothing queued: 6 to one lane, then 4 and 2 as lanes
    # free up, not all 12 to one lane (what main did before 467528e; fails if the worker
    # passes more=True or never sets _queue_drained).
    station, sources = two_lane_station(tmp_path, tiny_model_dir, 12)
    with daemon_thread(station):
        wait_until(probe.slow_submitted.is_set, "the held frame's decode submitted")
        probe.release.set()
        wait_until(
            lambda: settled(station) and count(station, "images") >= len(sources), "all filed"
        )
    assert probe.batches == [6, 4, 2]
    assert count(station, "classifications") == len(sources)
    assert check_invariant(station, {sha256_of(source) for source in sources}) == []


def test_frames_queued_while_a_batch_fills_keep_it_whole(
    tmp_path: Path, tiny_model_dir: Path, probe: Probe
) -> None:
    station, sources = two_lane_station(tmp_path, tiny_model_dir, 6)
    outside = tmp_path / "outside"
    later = [write_file(outside / f"LATE_{n:04d}.JPG", noise_jpeg(100 + n)) for n in range(20)]
    with daemon_thread(station):
        # The worker took all 6 in one top-up (queue drained) and waits for the held decode.
        wait_until(probe.slow_submitted.is_set, "the held frame's decode submitted")
        for source in later:
            shutil.copy(source, station.inbox / source.name)
        wait_until(lambda: count(station, "images") >= 26, "the 20 later frames queued")
        probe.release.set()
        wait_until(lambda: settled(station) and count(station, "images") >= 26, "all filed")
    assert count(station, "classifications") == 26
    assert check_invariant(station, {sha256_of(s) for s in [*sources, *later]}) == []
    # 20 more queued: not the end of a burst, so the 6 ready views go as one batch (hX7: 4).
    assert probe.batches[0] == 6


def test_a_panorama_and_a_frame_the_model_fails_on_in_a_shared_tail(
    tmp_path: Path, tiny_model_dir: Path, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # crops: 4:3 frames are 2 views, the 5:1 panorama 6. 14 views ready at the end: a share of
    # 7 takes frames 0-2, which hold the poison frame: the model raises, the batch is split and
    # each frame retried alone (the poison's retry waits in _retry_at while the rest goes on),
    # then frame 3 (share 4) and the panorama, more views than the share, alone.
    panorama, poison = "IMG_0004.JPG", "IMG_0002.JPG"
    station, sources = two_lane_station(
        tmp_path,
        tiny_model_dir,
        5,
        view="crops",
        size=lambda n: (160, 32) if n == 4 else (64, 48),
    )
    classify = daemon.worker.Worker._classify
    calls: list[list[str]] = []

    def failing(
        self: daemon.worker.Worker, good: list[Decoded]
    ) -> tuple[list[Classification], float]:
        names = [Path(d.item.path).name for d in good]
        calls.append(names)
        if poison in names:
            raise RuntimeError("the model cannot take this frame")
        return classify(self, good)

    monkeypatch.setattr(daemon.worker.Worker, "_classify", failing)
    with daemon_thread(station):
        wait_until(probe.slow_submitted.is_set, "the held frame's decode submitted")
        probe.release.set()
        wait_until(
            lambda: settled(station) and count(station, "images") >= len(sources), "all filed"
        )
    assert calls[0] == ["IMG_0000.JPG", "IMG_0001.JPG", poison]
    assert [panorama] in calls
    assert sorted(probe.batches) == [2, 2, 2, 6]  # each good frame classified once
    assert count(station, "classifications") == len(sources) - 1
    decisions = query(station, "SELECT original_path, decision FROM images")
    assert [Path(str(path)).name for path, d in decisions if d == "quarantined"] == [poison]
    assert check_invariant(station, {sha256_of(source) for source in sources}) == []
