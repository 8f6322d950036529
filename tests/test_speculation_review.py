"""Hostile review of the work ahead (daemon/speculation.py, commit 9485063): attacks on the
real daemon and the real parts. Tests marked DEFECT fail on 9485063."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import daemon.service
import daemon.speculation as speculation_module
from daemon.batching import decode_job_template
from daemon.classify.classifier import Classification, ClipClassifier, load_for_config
from daemon.classify.lanes import LanePlan, ModelLanes
from daemon.decode.jobs import DecodeJob, DecodeOutcome, decode_job
from daemon.decode.pool import DecoderPool
from daemon.delivery.router import RoutingLoop
from daemon.intake.stability import StabilityTracker
from daemon.speculation import LOOK_EVERY_SECONDS, WAIT, AheadLimits, Foreseen, Speculation
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
from tests.fake_clock import FakeClock
from tests.poison_decoders import poisoned_decode
from tests.speculation_review_decoders import slow_row_decode


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


# --- the parts: a Speculation over a real inbox, real decoders, real lanes ---------------------


@dataclass
class Parts:
    inbox: Path
    tracker: StabilityTracker
    classifier: ClipClassifier
    job: DecodeJob
    decoder: DecoderPool
    lanes: ModelLanes
    submitted: list[str]  # the path of every decode the work ahead started

    def speculation(self, **limits: Any) -> Speculation:
        settings: dict[str, Any] = {"batch_size": 8, "decodes": 2, "held": 16, "keep_seconds": 60}
        settings.update(limits)
        return Speculation(
            tracker=self.tracker,
            decoder=self.decoder,
            lanes=self.lanes,
            classifier=self.classifier,
            job=self.job,
            limits=AheadLimits(**settings),
        )

    def look(self, *paths: Path) -> None:
        for path in paths:
            self.tracker.note(path)
        assert self.tracker.take_stable() == []


@pytest.fixture
def parts(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Parts]:
    station = make_station(tmp_path / "station", tiny_model_dir)
    config = station.config()
    classifier = load_for_config(config)
    job = decode_job_template(classifier, config)
    tracker = StabilityTracker(60.0)  # nothing is ever taken: only worked on ahead
    lanes = ModelLanes(LanePlan(lanes=2, threads_per_lane=1))
    submitted: list[str] = []
    with DecoderPool(2, timeout=60) as decoder:
        submit = decoder.submit

        def counting(job: DecodeJob) -> Future[DecodeOutcome]:
            submitted.append(job.path)
            return submit(job)

        monkeypatch.setattr(decoder, "submit", counting)
        yield Parts(station.inbox, tracker, classifier, job, decoder, lanes, submitted)
    lanes.close()


def _run(speculation: Speculation, *, until: Callable[[], bool] = lambda: False) -> None:
    """Step the work ahead as an idle worker does, until `until` holds or it has had nothing
    to do for longer than its look interval (the worker steps it again after that too)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    busy_at = time.monotonic()
    while not until() and time.monotonic() < busy_at + 3 * LOOK_EVERY_SECONDS:
        assert time.monotonic() < deadline, "work ahead never ended"
        if speculation.step(free_lanes=2):
            busy_at = time.monotonic()
        speculation.wait(0.05)
    speculation.harvest()


# --- DEFECT: more quiet files than results kept: the same files decoded again and again ---------


def test_more_quiet_files_than_results_kept_are_each_decoded_ahead_once(parts: Parts) -> None:
    """DEFECT on 9485063. _forget_old drops the oldest results beyond `kept` (1024 in the
    daemon: a burst of a few thousand frames), which are the soonest due, the very ones
    quieting() lists first; _done_or_doing no longer skips them (their entry is gone), so
    they are decoded and classified again, dropped again, and so on for the whole quiet
    period: the work ahead never ends and burns the decoders and the model on frames it has
    already done. Shown here with kept=2 and 4 unchanged files."""
    files = [
        write_file(parts.inbox / f"IMG_{n:04}.JPG", noise_jpeg(200 + n, (32, 24))) for n in range(4)
    ]
    parts.look(*files)
    speculation = parts.speculation(kept=2)
    try:
        _run(speculation, until=lambda: len(parts.submitted) > 2 * len(files))
    finally:
        speculation.close()

    assert len(parts.submitted) >= 2  # it did work ahead, as much as it may keep
    assert len(parts.submitted) == len(set(parts.submitted)), "a file decoded ahead twice"


# --- held: the verdict taken is the one a decode now would give --------------------------------

SAMPLE_FILES = [
    "night_ir/american_black_bear.jpg",
    "tiger/anno_1440.jpg",
    "other_animal/snapshot_serengeti_S5_U10_U10_R4_S5_U10_R4_IMAG3595.JPG",
    "other_animal/ocelot.jpg",
    "edge_cases/african_elephants_with_exif_orientation.jpg",
    "edge_cases/african_elephants_cmyk.jpg",
]


def test_a_verdict_classified_ahead_is_that_of_a_decode_of_the_rows_bytes(
    parts: Parts, samples_dir: Path
) -> None:
    """Held. Real photos (infrared, EXIF camera and time, info strip, orientation, CMYK)
    decoded and classified ahead give the outcome (capture time, camera, infrared, strips)
    and the verdict a decode of the row's bytes gives now."""
    files = {
        write_file(parts.inbox / Path(name).name, (samples_dir / name).read_bytes()): name
        for name in SAMPLE_FILES
    }
    parts.look(*files)
    speculation = parts.speculation()
    seen: list[DecodeOutcome] = []
    try:
        _run(speculation)
        for path in files:
            digest = sha256_hex(path.read_bytes())
            claimed = speculation.claim(str(path), digest)
            assert isinstance(claimed, Foreseen), path
            now = decode_job(dataclasses.replace(parts.job, path=str(path), sha256=digest))
            assert now.pixels is not None
            assert _fields(claimed.outcome) == _fields(now)
            seen.append(claimed.outcome)
            expected = parts.classifier.classify_pixels([now.pixels], [now.infrared])[0]
            got = claimed.classification
            assert (got.infrared, got.view, len(got.views)) == (
                expected.infrared,
                expected.view,
                len(expected.views),
            )
            assert got.probabilities == pytest.approx(expected.probabilities, abs=2e-2)
            assert np.allclose(got.embedding, expected.embedding, atol=5e-2)
    finally:
        speculation.close()
    # The photos chosen exercise what the outcome carries beyond the pixels.
    assert any(outcome.infrared for outcome in seen)
    assert any(outcome.camera_make for outcome in seen)
    assert any(outcome.capture_time for outcome in seen)
    assert any(outcome.strip_top or outcome.strip_bottom for outcome in seen)


def _fields(outcome: DecodeOutcome) -> dict[str, object]:
    """An outcome's fields less its pixels and timing (DecodeOutcome has eq=False)."""
    fields = dataclasses.asdict(dataclasses.replace(outcome, pixels=None, decode_ms=0.0))
    return fields


# --- held: failures ahead cost the frame nothing -------------------------------------------------


def test_a_model_failure_ahead_costs_the_frame_no_attempt(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Held. Every batch ahead raises: the frame is classified as usual, once, with no
    attempt counted and no model failure counted against the daemon."""
    caplog.set_level(logging.INFO)
    failed: list[int] = []

    def failing(
        classifier: ClipClassifier, outcomes: Sequence[DecodeOutcome]
    ) -> tuple[list[Classification], float]:
        failed.append(len(outcomes))
        raise RuntimeError("CUDA out of memory (simulated, ahead)")

    monkeypatch.setattr(speculation_module, "classify_decoded", failing)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    frames = {f"IMG_03{n:02}.JPG": noise_jpeg(300 + n, (64, 48)) for n in range(4)}
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        for name, data in frames.items():
            write_file(station.inbox / name, data)
        wait_until(lambda: settled(station) and _filed(station) == len(frames), "frames filed")

    assert failed  # the attack ran: batches ahead were tried and failed
    assert query(station, "SELECT DISTINCT attempts FROM images") == [(0,)]
    assert count(station, "classifications") == len(frames)
    assert check_invariant(station, {sha256_hex(data) for data in frames.values()}) == []


def test_poison_files_decoded_ahead_are_quarantined_after_their_own_attempts(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Held. A file that kills its decoder and one that hangs it, both in their quiet period:
    the work ahead meets the crash and the hang first (the pool restarts the process), and
    costs neither frame an attempt; each is quarantined after max_decode_attempts decodes of
    its row, and a good frame beside them is filed."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(
        daemon.service, "DecoderPool", functools.partial(DecoderPool, job_function=poisoned_decode)
    )
    ahead: list[str] = []
    start_decode = Speculation._start_decode

    def recording(self: Speculation, path: str, *args: Any) -> bool:
        ahead.append(Path(path).name)
        return start_decode(self, path, *args)

    monkeypatch.setattr(Speculation, "_start_decode", recording)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
        worker={
            "decode_timeout_seconds": 1.0,
            "max_decode_attempts": 2,
            "retry_delay_seconds": 0.2,
            "batch_max_wait_seconds": 0.2,
            "destination_retry_seconds": 0.5,
        },
    )
    files = {
        "crash.jpg": noise_jpeg(401, (64, 48)),
        "hang.jpg": noise_jpeg(402, (64, 48)),
        "good.jpg": noise_jpeg(403, (64, 48)),
    }
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        for name, data in files.items():
            write_file(station.inbox / name, data)
        wait_until(lambda: settled(station) and _filed(station) == len(files), "all filed")

    assert {"crash.jpg", "hang.jpg"} <= set(ahead)  # the attack ran
    rows = {
        name: (decision, attempts)
        for name, decision, attempts in query(
            station, "SELECT original_name, decision, attempts FROM images"
        )
    }
    assert rows["crash.jpg"] == ("quarantined", 2)
    assert rows["hang.jpg"] == ("quarantined", 2)
    assert rows["good.jpg"][0] in {"positive", "negative", "uncertain"}
    assert check_invariant(station, {sha256_hex(data) for data in files.values()}) == []


# --- cost: a file uploaded slowly ------------------------------------------------------------


def test_a_file_uploaded_in_chunks_is_not_classified_ahead_cut_short(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An uploader that opens, appends and closes per chunk (no writer held between): every
    chunk restarts the quiet period with a new signature, and the work ahead decodes the
    file as it stands each time. Costs one read and decode per chunk; what matters is that
    none of those cut-short frames reaches the model or is taken for the row."""
    batches: list[int] = []
    real = speculation_module.classify_decoded

    def counting(
        classifier: ClipClassifier, outcomes: Sequence[DecodeOutcome]
    ) -> tuple[list[Classification], float]:
        batches.append(len(outcomes))
        return real(classifier, outcomes)

    monkeypatch.setattr(speculation_module, "classify_decoded", counting)
    data = noise_jpeg(500, (640, 480))
    path = parts.inbox / "IMG_0500.JPG"
    chunks = 10
    size = -(-len(data) // chunks)
    speculation = parts.speculation()
    try:
        for start in range(0, len(data), size):
            with path.open("ab") as handle:
                handle.write(data[start : start + size])
            parts.look(path)  # the intake's pass on the CLOSED hint
            _run(speculation)
        claimed = speculation.claim(str(path), sha256_hex(data))
    finally:
        speculation.close()
    print(f"{chunks} chunks: {len(parts.submitted)} decodes ahead, {sum(batches)} classified")
    assert isinstance(claimed, Foreseen)
    assert sum(batches) == 1, "cut-short frames were classified ahead"


# --- held: stop while work ahead runs -----------------------------------------------------------


def test_the_daemon_stops_promptly_while_a_decode_ahead_hangs(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Held. A decode ahead that never ends (decode timeout 300 s) does not hold up a stop:
    the pool kills its busy process at once (daemon_thread fails a stop over 60 s)."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(
        daemon.service, "DecoderPool", functools.partial(DecoderPool, job_function=poisoned_decode)
    )
    started = threading.Event()
    start_decode = Speculation._start_decode

    def recording(self: Speculation, path: str, *args: Any) -> bool:
        submitted = start_decode(self, path, *args)
        started.set()
        return submitted

    monkeypatch.setattr(Speculation, "_start_decode", recording)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 30.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
        worker={"decode_timeout_seconds": 300.0},
    )
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        write_file(station.inbox / "hang.jpg", noise_jpeg(600, (64, 48)))
        wait_until(started.is_set, "the decode ahead to start")
    assert "stopped" in caplog.text


# --- held: other bytes under the name ----------------------------------------------------------


def test_a_file_rewritten_with_its_size_and_mtime_after_the_work_ahead_is_decoded_anew(
    parts: Parts,
) -> None:
    """Held. Other bytes of the same size, the mtime set back (touch -d) and the same inode:
    the tracker sees no change, but the row's digest is that of the new bytes, so the work
    ahead on the old ones is not taken."""
    old = noise_jpeg(700, (64, 48))
    new = bytearray(old)
    new[-100] ^= 0xFF  # the same length, other content
    path = write_file(parts.inbox / "IMG_0700.JPG", old)
    before = path.stat()
    parts.look(path)
    speculation = parts.speculation()
    try:
        _run(speculation)
        with path.open("r+b") as handle:  # in place: the same inode
            handle.write(bytes(new))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_ino == before.st_ino
        assert parts.tracker.take_stable() == []  # unchanged to the tracker
        assert speculation.claim(str(path), sha256_hex(bytes(new))) is None
    finally:
        speculation.close()


def test_a_file_renamed_away_and_another_put_under_its_name_is_judged_by_its_bytes(
    parts: Parts,
) -> None:
    """Held. The first file classified ahead is renamed away and another, of the same size
    and mtime, put under its name: the row of the name holds the new bytes and gets nothing
    from the work ahead on the old ones; the renamed file's own row (its new name) neither."""
    first = noise_jpeg(710, (64, 48))
    second = noise_jpeg(711, (64, 48))
    path = write_file(parts.inbox / "IMG_0710.JPG", first)
    parts.look(path)
    speculation = parts.speculation()
    try:
        _run(speculation)
        moved = path.rename(parts.inbox / "IMG_0710_renamed.JPG")
        write_file(path, second)
        assert speculation.claim(str(path), sha256_hex(second)) is None
        assert speculation.claim(str(moved), sha256_hex(first)) is None
    finally:
        speculation.close()


def test_a_parked_row_taken_twice_is_not_recorded_vanished_once_filed(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEFECT on 9485063, the worse face of the double take above: the second decode of the
    row reads the file after the routing moved it into the destination (decodes of rows
    made slow here), finds it gone, and record_vanished closes the filed row as VANISHED
    (it checks the path, not the state): the database says the frame vanished while it
    lies in the archive."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    monkeypatch.setattr(
        daemon.service, "DecoderPool", functools.partial(DecoderPool, job_function=slow_row_decode)
    )
    parked = threading.Event()
    claims = _claims(monkeypatch, parked)
    real = speculation_module.classify_decoded

    def slow_ahead(
        classifier: ClipClassifier, outcomes: Sequence[DecodeOutcome]
    ) -> tuple[list[Classification], float]:
        parked.wait(SETTLE_TIMEOUT)
        return real(classifier, outcomes)

    monkeypatch.setattr(speculation_module, "classify_decoded", slow_ahead)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    data = noise_jpeg(102, (64, 48))
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        write_file(station.inbox / "IMG_0102.JPG", data)
        wait_until(lambda: settled(station) and _filed(station) == 1, "the frame filed")
        # A second take (a None claim) ends in a second classification or a vanished row.
        wait_until(
            lambda: (
                None not in claims
                or count(station, "classifications") > 1
                or query(station, "SELECT decision FROM images")[0][0] == "vanished"
            ),
            "the second take, if any, to end",
        )

    assert query(station, "SELECT decision FROM images")[0][0] != "vanished"
    assert check_invariant(station, {sha256_hex(data)}) == []


# --- held: results nobody claims are dropped ---------------------------------------------


def test_results_nobody_claims_are_dropped_after_keep_seconds(parts: Parts) -> None:
    """Held. Files classified ahead that never get a row of their own (deleted, rejected,
    duplicates): their results are dropped once keep_seconds have passed, so memory holds
    no more than the results of the last keep_seconds (and at most `kept`)."""
    clock = FakeClock()
    files = [
        write_file(parts.inbox / f"IMG_08{n:02}.JPG", noise_jpeg(800 + n, (32, 24)))
        for n in range(3)
    ]
    parts.look(*files)
    speculation = Speculation(
        tracker=parts.tracker,
        decoder=parts.decoder,
        lanes=parts.lanes,
        classifier=parts.classifier,
        job=parts.job,
        limits=AheadLimits(batch_size=8, decodes=2, held=16, keep_seconds=60),
        clock=clock,
    )
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while speculation.step(free_lanes=2) or len(parts.submitted) < len(files):
            assert time.monotonic() < deadline, "work ahead never ended"
            speculation.wait(0.05)
            clock.advance(LOOK_EVERY_SECONDS / 4)  # the next look comes after a few steps
        assert sorted(parts.submitted) == sorted(str(path) for path in files)
        kept = files.pop()
        assert isinstance(speculation.claim(str(kept), sha256_hex(kept.read_bytes())), Foreseen)
        digests = {path: sha256_hex(path.read_bytes()) for path in files}
        for path in [*files, kept]:  # the others leave the inbox without a row
            path.unlink()
        assert parts.tracker.take_stable() == []  # and the tracker forgets them
        clock.advance(61.0)
        assert not speculation.step(free_lanes=2)
        for path in files:  # a claim now, with the right digest, finds nothing
            assert speculation.claim(str(path), digests[path]) is None
        assert len(parts.submitted) == 3  # nothing decoded again meanwhile
    finally:
        speculation.close()


# --- waste: work ahead while the destination disk is full ----------------------------------------


def test_no_work_ahead_while_the_destination_is_full(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DEFECT (waste) on 9485063. While the destination disk is full (routing blocked) the
    worker takes no rows, so it sits idle, and the work ahead decodes and classifies every
    frame arriving meanwhile: results no row takes before keep_seconds (quiet + 60 s) have
    passed are dropped, and each frame is decoded and classified again once space returns.
    A full disk can last hours on a remote station: the CPU (and battery) spent twice."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    full = threading.Event()
    monkeypatch.setattr(RoutingLoop, "blocked", property(lambda self: full.is_set()))
    ahead: list[str] = []
    start_decode = Speculation._start_decode

    def recording(self: Speculation, path: str, *args: Any) -> bool:
        ahead.append(Path(path).name)
        return start_decode(self, path, *args)

    monkeypatch.setattr(Speculation, "_start_decode", recording)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    data = noise_jpeg(900, (64, 48))
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        full.set()
        write_file(station.inbox / "IMG_0900.JPG", data)
        wait_until(lambda: len(query(station, "SELECT id FROM images")) == 1, "the row recorded")
        assert ahead == []  # nothing done ahead that no row may take
        full.clear()
        wait_until(lambda: settled(station) and _filed(station) == 1, "the frame filed")
    assert check_invariant(station, {sha256_hex(data)}) == []


# --- held: the same bytes under two names ---------------------------------------------------------


def test_the_same_bytes_under_two_names_are_filed_once_each(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Held. One content dropped under two names during the quiet period: the work ahead is
    kept by path, each row takes at most its own path's, and the invariant holds (one
    classification per classified row, every file in one place, recorded)."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    claims = _claims(monkeypatch)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 1.0, "rescan_interval_seconds": 60, "health_check_seconds": 0.5},
    )
    data = noise_jpeg(950, (64, 48))
    with daemon_thread(station):
        wait_until(lambda: "ready in" in caplog.text, "the daemon to be ready")
        write_file(station.inbox / "IMG_0950.JPG", data)
        write_file(station.inbox / "copy_of_IMG_0950.JPG", data)
        wait_until(
            lambda: (
                settled(station) and count(station, "images") + count(station, "duplicates") == 2
            ),
            "both names settled",
        )
    # One image row (the other name is its duplicate), classified once.
    assert (count(station, "images"), count(station, "duplicates")) == (1, 1)
    assert count(station, "classifications") == 1
    assert len([found for found in claims if isinstance(found, Foreseen)]) <= 1
    assert check_invariant(station, {sha256_hex(data)}) == []


def _rows(station: Station) -> int:
    return count(station, "images") + count(station, "duplicates")
