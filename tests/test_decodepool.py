"""Tests for daemon.decode.pool: real decoder processes, poison images, timeouts and shutdown."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import daemon.decode.pool as pool_module
from daemon.decode.imaging import DEFAULT_FORMATS, decode_image
from daemon.decode.jobs import GONE_CHANGED, GONE_MISSING, DecodeJob, DecodeOutcome, decode_job
from daemon.decode.pool import DecoderPool, DecoderPoolError
from daemon.decode.preprocess import normalise_levels, to_pixels
from tests.clip_spec import CLIP_SPEC

RESULT_WAIT = 20.0  # generous: a 2-core box may be busy; a hang shows up as a test failure
HANG_TIMEOUT = 1.0
HEAVY_MODULES = (
    "torch",
    "transformers",
    "sqlalchemy",
    "daemon.classify.classifier",
    "daemon.worker",
)


# --- job functions run in the child (top level, so they pickle by reference) ----------------------


def poison_job(job: DecodeJob) -> DecodeOutcome:
    """Misbehaves as the file's name says; any other file is decoded normally."""
    name = Path(job.path).name
    if name.startswith("hang"):
        threading.Event().wait()  # a decoder stuck for good
    if name.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("exit"):
        os._exit(3)
    if name.startswith("raise"):
        raise RuntimeError("decoder bug")
    if name.startswith("interrupt"):
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C meant for the daemon reaches the group
    if name.startswith("log"):
        logging.getLogger("daemon.decode.imaging").warning("%s: corrupt EXIF ignored", job.path)
    if name.startswith("unsendable"):
        return DecodeOutcome(camera_make=threading.Lock())  # type: ignore[arg-type]
    if name.startswith("pid"):
        return DecodeOutcome(camera_model=str(os.getpid()))
    return decode_job(job)


def loaded_modules(job: DecodeJob) -> DecodeOutcome:
    """Reports the child's imported modules in the error field."""
    return DecodeOutcome(error=" ".join(sorted(sys.modules)))


# --- helpers -----------------------------------------------------------------------------------


def make_jpeg(path: Path, size: tuple[int, int] = (1200, 900), *, exif: bool = False) -> Path:
    width, height = size
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    params: dict[str, object] = {"quality": 90}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "RECONYX"
        tags[0x0110] = "HC600 HYPERFIRE"
        tags[0x0132] = "2024:05:06 07:08:09"
        params["exif"] = tags
    image.save(path, "JPEG", **params)
    return path


def job_for(path: Path, sha256: str | None = None) -> DecodeJob:
    if sha256 is None:
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "0" * 64
    return DecodeJob(
        path=str(path),
        sha256=sha256,
        formats=DEFAULT_FORMATS,
        max_pixels=50_000_000,
        draft_size=224,
        spec=CLIP_SPEC,
    )


def marker(tmp_path: Path, name: str) -> DecodeJob:
    """A job for a poison_job marker file (its content does not matter)."""
    path = tmp_path / name
    path.write_bytes(b"marker")
    return job_for(path)


def result(future: Future[DecodeOutcome]) -> DecodeOutcome:
    return future.result(timeout=RESULT_WAIT)


def decodes(pool: DecoderPool, image: Path) -> bool:
    outcome = result(pool.submit(job_for(image)))
    return outcome.pixels is not None and outcome.error is None


def wait_for(predicate: Callable[[], bool], timeout: float = RESULT_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def process_gone(pid: int) -> bool:
    """True once our child `pid` has exited (waitable, or already reaped by the pool).

    WNOWAIT leaves the exit status for the pool to collect. A zombie main thread is not enough:
    until its other threads are gone too, the process still holds its end of the pipe.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def child_pid(pool: DecoderPool, tmp_path: Path) -> int:
    outcome = result(pool.submit(marker(tmp_path, "pid")))
    assert outcome.camera_model is not None
    return int(outcome.camera_model)


@pytest.fixture
def good_jpeg(tmp_path: Path) -> Path:
    return make_jpeg(tmp_path / "good.jpg", exif=True)


@pytest.fixture(scope="module")
def shared_pool() -> Iterator[DecoderPool]:
    """For tests of ordinary outcomes: the pool has no state they could disturb."""
    with DecoderPool(2, timeout=30.0, job_function=poison_job) as pool:
        yield pool


# --- ordinary outcomes ----------------------------------------------------------------------------


def test_decodes_like_the_in_process_pipeline(shared_pool: DecoderPool, good_jpeg: Path) -> None:
    outcome = result(shared_pool.submit(job_for(good_jpeg)))
    in_process = decode_image(good_jpeg.read_bytes(), name=str(good_jpeg), draft_size=224)
    assert outcome.error is None
    assert outcome.gone is None
    assert outcome.pixels is not None
    assert outcome.pixels.dtype == np.uint8  # levels: the model's process normalises them
    normalised = normalise_levels(outcome.pixels, CLIP_SPEC)
    assert np.array_equal(normalised, to_pixels(in_process.image, CLIP_SPEC)[np.newaxis])
    assert outcome.camera_make == "reconyx"  # normalised: case folded
    assert outcome.camera_model == "hc600 hyperfire"
    assert outcome.capture_time == datetime(2024, 5, 6, 7, 8, 9)
    assert outcome.decode_ms > 0


def test_the_default_job_function_runs_in_the_child(good_jpeg: Path) -> None:
    with DecoderPool(1, timeout=30.0) as pool:
        outcome = result(pool.submit(job_for(good_jpeg)))
    assert outcome.pixels is not None
    assert outcome.pixels.shape == (1, 224, 224, 3)  # the job's view: center, one view


def test_changed_content_is_gone(shared_pool: DecoderPool, good_jpeg: Path) -> None:
    outcome = result(shared_pool.submit(job_for(good_jpeg, sha256="ab" * 32)))
    assert outcome.gone == GONE_CHANGED
    assert outcome.error is None
    assert outcome.pixels is None


def test_missing_file_is_gone(shared_pool: DecoderPool, tmp_path: Path) -> None:
    outcome = result(shared_pool.submit(job_for(tmp_path / "never-there.jpg")))
    assert outcome.gone == GONE_MISSING
    assert outcome.error is None


def test_symlink_is_not_followed(shared_pool: DecoderPool, good_jpeg: Path) -> None:
    link = good_jpeg.with_name("link.jpg")
    link.symlink_to(good_jpeg)
    outcome = result(shared_pool.submit(job_for(link, sha256=job_for(good_jpeg).sha256)))
    assert outcome.pixels is None
    assert outcome.error is not None
    assert outcome.error.startswith(f"{link}: cannot be read")


def test_random_bytes_are_an_error(shared_pool: DecoderPool, tmp_path: Path) -> None:
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).bytes(5000))
    outcome = result(shared_pool.submit(job_for(path)))
    assert outcome.pixels is None
    assert outcome.gone is None
    assert outcome.error == f"{path}: not an image in an accepted format"


def test_truncated_jpeg_is_an_error(shared_pool: DecoderPool, tmp_path: Path) -> None:
    whole = make_jpeg(tmp_path / "whole.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    outcome = result(shared_pool.submit(job_for(path)))
    assert outcome.pixels is None
    assert outcome.error is not None
    assert outcome.error.startswith(f"{path}: ")
    assert "truncated" in outcome.error.lower()


def test_an_exception_in_the_job_function_is_an_error(
    shared_pool: DecoderPool, tmp_path: Path
) -> None:
    job = marker(tmp_path, "raise.jpg")
    outcome = result(shared_pool.submit(job))
    assert outcome.error == f"{job.path}: unexpected decoder failure: RuntimeError('decoder bug')"


def test_an_outcome_that_cannot_be_sent_is_an_error(
    shared_pool: DecoderPool, tmp_path: Path
) -> None:
    job = marker(tmp_path, "unsendable.jpg")
    outcome = result(shared_pool.submit(job))
    assert outcome.error is not None
    assert outcome.error.startswith(f"{job.path}: decoder result not transferable")


def test_child_ignores_sigint(shared_pool: DecoderPool, tmp_path: Path, good_jpeg: Path) -> None:
    interrupted = tmp_path / "interrupt.jpg"
    interrupted.write_bytes(good_jpeg.read_bytes())
    outcome = result(shared_pool.submit(job_for(interrupted)))
    assert outcome.error is None
    assert outcome.pixels is not None


def test_child_log_lines_reach_the_parent_log(
    shared_pool: DecoderPool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logged = make_jpeg(tmp_path / "log.jpg")
    with caplog.at_level(logging.WARNING):
        outcome = result(shared_pool.submit(job_for(logged)))
    assert outcome.pixels is not None
    assert (
        "daemon.decode.imaging",
        logging.WARNING,
        f"{logged}: corrupt EXIF ignored",
    ) in caplog.record_tuples


def test_many_jobs_in_parallel_all_complete(shared_pool: DecoderPool, tmp_path: Path) -> None:
    images = [make_jpeg(tmp_path / f"img{index}.jpg", (320 + index, 240)) for index in range(5)]
    futures = [shared_pool.submit(job_for(images[index % 5])) for index in range(50)]
    outcomes = [result(future) for future in futures]
    assert all(outcome.error is None and outcome.pixels is not None for outcome in outcomes)
    first, second = outcomes[0].pixels, outcomes[1].pixels
    assert first is not None
    assert second is not None
    assert not np.array_equal(first, second)  # each future got its own image's pixels
    assert outcomes[5].pixels is not None
    assert np.array_equal(first, outcomes[5].pixels)


def test_the_child_imports_no_model_code(tmp_path: Path) -> None:
    with DecoderPool(1, timeout=30.0, job_function=loaded_modules) as pool:
        outcome = result(pool.submit(marker(tmp_path, "any.jpg")))
    assert outcome.error is not None
    modules = set(outcome.error.split())
    assert {
        "daemon.decode.pool",
        "daemon.decode.imaging",
        "daemon.decode.preprocess",
        "PIL",
        "numpy",
    } <= modules
    assert not modules & set(HEAVY_MODULES)


def test_jobs_and_outcomes_pickle(good_jpeg: Path) -> None:
    job = job_for(good_jpeg)
    assert pickle.loads(pickle.dumps(job)) == job
    outcome = decode_job(job)
    copy = pickle.loads(pickle.dumps(outcome))
    assert copy.pixels is not None
    assert outcome.pixels is not None
    assert np.array_equal(copy.pixels, outcome.pixels)
    assert copy.capture_time == outcome.capture_time


# --- poison images -------------------------------------------------------------------------------


def test_a_hanging_decode_is_stopped_by_the_timeout(tmp_path: Path, good_jpeg: Path) -> None:
    with DecoderPool(1, timeout=HANG_TIMEOUT, job_function=poison_job) as pool:
        hang = marker(tmp_path, "hang.jpg")
        outcome = result(pool.submit(hang))  # RESULT_WAIT: a hang guard, not a bound
        assert outcome.error == f"{hang.path}: decoding took longer than 1 s"
        assert outcome.pixels is None
        assert decodes(pool, good_jpeg)


def test_a_segfaulting_decoder_fails_only_its_image(tmp_path: Path, good_jpeg: Path) -> None:
    with DecoderPool(1, timeout=30.0, job_function=poison_job) as pool:
        crash = marker(tmp_path, "segv.jpg")
        outcome = result(pool.submit(crash))
        assert outcome.error == f"{crash.path}: the decoder process died (signal SIGSEGV)"
        assert decodes(pool, good_jpeg)


def test_a_decoder_that_exits_fails_only_its_image(tmp_path: Path, good_jpeg: Path) -> None:
    with DecoderPool(1, timeout=30.0, job_function=poison_job) as pool:
        exits = marker(tmp_path, "exit.jpg")
        outcome = result(pool.submit(exits))
        assert outcome.error == f"{exits.path}: the decoder process died (exit code 3)"
        assert decodes(pool, good_jpeg)


def test_the_pool_survives_poison_after_poison(tmp_path: Path, good_jpeg: Path) -> None:
    names = ["hang1.jpg", "segv1.jpg", "exit1.jpg", "segv2.jpg", "hang2.jpg"]
    with DecoderPool(2, timeout=HANG_TIMEOUT, job_function=poison_job) as pool:
        poisoned = [pool.submit(marker(tmp_path, name)) for name in names]
        good = [pool.submit(job_for(good_jpeg)) for _ in range(4)]
        errors = [result(future).error for future in poisoned]
        assert all(error is not None for error in errors)
        assert all(outcome.pixels is not None for outcome in map(result, good))
        assert decodes(pool, good_jpeg)


def test_a_process_killed_while_idle_is_replaced_without_blame(
    tmp_path: Path, good_jpeg: Path
) -> None:
    with DecoderPool(1, timeout=30.0, job_function=poison_job) as pool:
        pid = child_pid(pool, tmp_path)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: process_gone(pid))
        assert decodes(pool, good_jpeg)
        assert child_pid(pool, tmp_path) != pid


# --- start and shutdown ---------------------------------------------------------------------------


def test_close_is_quick_with_a_hung_child_and_cancels_the_rest(
    tmp_path: Path, good_jpeg: Path
) -> None:
    pool = DecoderPool(1, timeout=60.0, job_function=poison_job)
    pid = child_pid(pool, tmp_path)
    hung = pool.submit(marker(tmp_path, "hang.jpg"))
    queued = [pool.submit(job_for(good_jpeg)) for _ in range(3)]
    assert not wait_for(hung.done, timeout=0.5)  # it really is stuck
    # Imported here: this module is imported by the decoder children, which must stay light.
    from tests.daemon_support import returns_within

    # Hang guard: waiting for the hung job would take its whole 60 s time limit.
    assert returns_within(pool.close, 30.0), "close() waited for the hung decode"
    assert hung.cancelled()
    assert all(future.cancelled() for future in queued)
    with pytest.raises(CancelledError):
        hung.result(timeout=0)
    assert process_gone(pid)
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(job_for(good_jpeg))
    pool.close()  # a second close is harmless


def test_close_stops_idle_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = DecoderPool(2, timeout=30.0, job_function=poison_job)
    pids = {child_pid(pool, tmp_path) for _ in range(6)}
    reaped: list[int] = []
    killed_while_running: list[int] = []
    original_kill = pool_module._Child.kill

    def recording_kill(child: pool_module._Child) -> str:
        reaped.append(child.pid)
        if child.alive():
            killed_while_running.append(child.pid)
        return original_kill(child)

    monkeypatch.setattr(pool_module._Child, "kill", recording_kill)
    pool.close()
    # Idle children exit when asked: none is still running when its grace period is over.
    assert len(set(reaped)) == 2  # both children went through the stop path
    assert killed_while_running == []
    assert all(process_gone(pid) for pid in pids)


def test_a_job_function_that_cannot_be_sent_fails_at_start() -> None:
    def nested(job: DecodeJob) -> DecodeOutcome:
        return DecodeOutcome()

    with pytest.raises(DecoderPoolError, match="job function"):
        DecoderPool(1, timeout=1.0, job_function=nested)


@pytest.mark.parametrize(("processes", "timeout"), [(0, 1.0), (1, 0.0)])
def test_bad_arguments_are_refused(processes: int, timeout: float) -> None:
    with pytest.raises(ValueError):
        DecoderPool(processes, timeout=timeout)


def test_decoders_ignore_a_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bootstrap imports multiprocessing: one in the cwd would kill every decoder at start.
    (tmp_path / "multiprocessing.py").write_text("raise SystemExit('imported from the cwd')\n")
    monkeypatch.chdir(tmp_path)
    frame = tmp_path / "frame.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(frame)

    with DecoderPool(1, timeout=60) as pool:
        outcome = pool.submit(job_for(frame)).result(timeout=120)

    assert outcome.error is None and outcome.pixels is not None
