"""Work ahead on files in their quiet period (daemon/speculation.py): real decoders, a real tiny
CLIP in real lanes, a real stability tracker over real files, and the daemon end to end."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import daemon.speculation
from daemon.batching import decode_job_template
from daemon.classify.classifier import ClipClassifier, load_for_config
from daemon.classify.lanes import LanePlan, ModelLanes
from daemon.decode.jobs import GONE_CHANGED, DecodeJob, decode_job
from daemon.decode.pool import DecoderPool
from daemon.intake.stability import Hint, StabilityTracker
from daemon.speculation import WAIT, AheadLimits, Foreseen, Speculation
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


@dataclass
class Ahead:
    """A Speculation over a real inbox, with everything it works with."""

    inbox: Path
    tracker: StabilityTracker
    speculation: Speculation
    classifier: ClipClassifier
    job: DecodeJob  # the worker's, less path and digest
    first_looks: list[float]

    def note_and_look(self, path: Path) -> None:
        """The intake's first look at a new file: its quiet period starts."""
        self.tracker.note(path)
        assert self.tracker.take_stable() == []

    def run_until_idle(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.speculation.step(free_lanes=2):
            assert time.monotonic() < deadline, "work ahead never ended"
            self.speculation.wait(0.1)
        self.speculation.harvest()


@pytest.fixture
def ahead(tmp_path: Path, tiny_model_dir: Path) -> Iterator[Ahead]:
    station = make_station(tmp_path / "station", tiny_model_dir)
    config = station.config()
    classifier = load_for_config(config)
    job = decode_job_template(classifier, config)
    first_looks: list[float] = []
    # A long quiet period: nothing here is ever taken, only worked on ahead.
    tracker = StabilityTracker(60.0, on_first_look=lambda: first_looks.append(time.monotonic()))
    lanes = ModelLanes(LanePlan(lanes=2, threads_per_lane=1))
    with DecoderPool(2, timeout=60) as decoder:
        limits = AheadLimits(batch_size=8, decodes=2, held=16, keep_seconds=60)
        speculation = Speculation(
            tracker=tracker,
            decoder=decoder,
            lanes=lanes,
            classifier=classifier,
            job=job,
            limits=limits,
        )
        yield Ahead(station.inbox, tracker, speculation, classifier, job, first_looks)
        speculation.close()
    lanes.close()


def test_a_file_in_its_quiet_period_is_classified_ahead_for_the_row_with_its_bytes(
    ahead: Ahead,
) -> None:
    data = noise_jpeg(1, (64, 48))
    path = write_file(ahead.inbox / "IMG_0001.JPG", data)
    ahead.note_and_look(path)
    assert len(ahead.first_looks) == 1  # the worker is woken to start on it

    ahead.run_until_idle()
    claimed = ahead.speculation.claim(str(path), sha256_hex(data))

    assert isinstance(claimed, Foreseen)
    assert claimed.outcome.pixels is None  # the pixels are not kept once classified
    assert claimed.outcome.sha256 == sha256_hex(data)
    # The same verdict as the file classified now, the worker's way.
    now = decode_job(dataclasses.replace(ahead.job, path=str(path), sha256=sha256_hex(data)))
    assert now.pixels is not None
    expected = ahead.classifier.classify_pixels([now.pixels], [now.infrared])[0]
    assert claimed.classification.target_score == pytest.approx(expected.target_score, abs=1e-5)
    assert np.allclose(claimed.classification.embedding, expected.embedding, atol=1e-5)
    # Taken once: a second row of the same path gets nothing ahead.
    assert ahead.speculation.claim(str(path), sha256_hex(data)) is None


def test_work_ahead_on_other_bytes_than_the_rows_is_not_used(ahead: Ahead) -> None:
    first, second = noise_jpeg(1, (64, 48)), noise_jpeg(2, (64, 48))
    path = write_file(ahead.inbox / "IMG_0002.JPG", first)
    ahead.note_and_look(path)
    ahead.run_until_idle()
    # Rewritten once the work ahead ended: the row holds the new bytes, the digest tells.
    write_file(path, second)

    assert ahead.speculation.claim(str(path), sha256_hex(second)) is None


def test_a_file_changed_since_its_look_is_not_decoded_ahead(ahead: Ahead) -> None:
    data = noise_jpeg(3, (64, 48))
    path = write_file(ahead.inbox / "IMG_0003.JPG", data[: len(data) // 2])
    ahead.note_and_look(path)  # looked at half written
    with path.open("ab") as handle:  # the rest arrives before the decoder reads it
        handle.write(data[len(data) // 2 :])

    ahead.run_until_idle()

    # Nothing ahead for either content: the half is not what the row will hold, and the whole
    # was never read ahead (its size is not what was looked at).
    assert ahead.speculation.claim(str(path), sha256_hex(data)) is None


def test_a_file_the_decoders_refuse_is_left_to_the_worker(ahead: Ahead) -> None:
    data = b"not an image at all" * 10
    path = write_file(ahead.inbox / "IMG_0004.JPG", data)
    ahead.note_and_look(path)

    ahead.run_until_idle()

    # The worker decodes it and counts that attempt: no failure is recorded from work ahead.
    assert ahead.speculation.claim(str(path), sha256_hex(data)) is None


def test_a_claim_while_the_work_ahead_runs_waits_for_it(ahead: Ahead) -> None:
    data = noise_jpeg(5, (64, 48))
    path = write_file(ahead.inbox / "IMG_0005.JPG", data)
    ahead.note_and_look(path)
    assert ahead.speculation.step(free_lanes=2)  # its decode is under way

    assert ahead.speculation.claim(str(path), sha256_hex(data)) == WAIT
    ahead.run_until_idle()
    assert isinstance(ahead.speculation.claim(str(path), sha256_hex(data)), Foreseen)


def test_quieting_lists_only_files_looked_at_and_not_held(tmp_path: Path) -> None:
    tracker = StabilityTracker(60.0)
    files = [write_file(tmp_path / f"IMG_{n}.JPG", noise_jpeg(n, (16, 16))) for n in range(4)]
    tracker.note(files[0])
    assert tracker.quieting(10, skip=lambda *_: False) == []  # not looked at yet
    assert tracker.take_stable() == []
    tracker.note(files[1], Hint.WRITTEN)  # a writer holds it open
    tracker.note(files[2])
    assert tracker.take_stable() == []

    listed = [path for path, _ in tracker.quieting(10, skip=lambda *_: False)]
    assert listed == [files[0], files[2]]  # the soonest due first
    assert [path for path, _ in tracker.quieting(1, skip=lambda *_: False)] == [files[0]]
    skipped = tracker.quieting(10, skip=lambda path, _: path == files[0])
    assert [path for path, _ in skipped] == [files[2]]


def test_a_decode_job_with_a_look_reads_only_the_file_as_looked_at(ahead: Ahead) -> None:
    data = noise_jpeg(6, (64, 48))
    path = write_file(ahead.inbox / "IMG_0006.JPG", data)
    seen = path.stat()
    job = dataclasses.replace(
        ahead.job, path=str(path), unchanged_since=(seen.st_size, seen.st_mtime_ns)
    )

    outcome = decode_job(job)
    assert outcome.pixels is not None and outcome.sha256 == sha256_hex(data)

    with path.open("ab") as handle:
        handle.write(b"\0")
    assert decode_job(job).gone == GONE_CHANGED


def test_the_daemon_files_a_frame_classified_during_its_quiet_period_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="daemon.service")
    claims: list[object] = []
    claim = Speculation.claim

    def recording(self: Speculation, path: str, sha256: str) -> object:
        found = claim(self, path, sha256)
        claims.append(found)
        return found

    monkeypatch.setattr(Speculation, "claim", recording)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 2.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    data = noise_jpeg(7, (64, 48))
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        write_file(station.inbox / "IMG_0007.JPG", data)
        wait_until(lambda: settled(station) and _filed(station) == 1, "the frame filed")

    assert [type(found) for found in claims if found != WAIT] == [Foreseen]
    assert query(station, "SELECT sha256, state FROM images") == [(sha256_hex(data), "done")]
    assert count(station, "classifications") == 1
    assert check_invariant(station, {sha256_hex(data)}) == []


def _filed(station: Station) -> int:
    return len(query(station, "SELECT id FROM images WHERE state = 'done'"))


def test_a_file_taken_by_intake_before_its_turn_is_not_decoded_ahead(ahead: Ahead) -> None:
    contents = [noise_jpeg(n, (64, 48)) for n in (8, 9, 10)]
    paths = [write_file(ahead.inbox / f"IMG_{n:04d}.JPG", data) for n, data in enumerate(contents)]
    for path in paths:
        ahead.note_and_look(path)
    assert ahead.speculation.step(free_lanes=2)  # two decodes under way (the limit), one listed
    ahead.tracker.forget(paths[2])  # taken by intake: its row is decoded the usual way

    ahead.run_until_idle()

    for path, data in zip(paths[:2], contents[:2], strict=True):
        assert isinstance(ahead.speculation.claim(str(path), sha256_hex(data)), Foreseen)
    assert ahead.speculation.claim(str(paths[2]), sha256_hex(contents[2])) is None


def test_a_row_that_waited_for_its_work_ahead_is_classified_once(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The row is recorded while its frame is in a lane ahead of time: it waits (parked), then
    takes that verdict. Before the fix the same top-up took it again as a due row, decoded and
    classified it a second time, and closed it as vanished once the first result had moved it."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    parked = threading.Event()
    claim = Speculation.claim
    classify_ahead = daemon.speculation.classify_decoded

    def noting_waits(self: Speculation, path: str, sha256: str) -> object:
        found = claim(self, path, sha256)
        if found == WAIT:
            parked.set()
        return found

    def held_until_a_row_waits(*args: Any) -> Any:
        parked.wait(SETTLE_TIMEOUT)
        return classify_ahead(*args)

    monkeypatch.setattr(Speculation, "claim", noting_waits)
    monkeypatch.setattr(daemon.speculation, "classify_decoded", held_until_a_row_waits)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    contents = [noise_jpeg(n, (64, 48)) for n in range(20, 26)]
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        for n, data in enumerate(contents):
            write_file(station.inbox / f"IMG_{n:04d}.JPG", data)
        wait_until(lambda: settled(station) and _filed(station) == len(contents), "all filed")

    assert parked.is_set()  # the case under test happened
    assert query(station, "SELECT count(*), count(DISTINCT image_id) FROM classifications") == [
        (len(contents), len(contents))
    ]
    assert query(station, "SELECT count(*) FROM images WHERE decision = 'vanished'") == [(0,)]
    assert check_invariant(station, {sha256_hex(data) for data in contents}) == []
