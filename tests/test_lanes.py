"""Model lanes: how the model's threads are split, and that lanes really run side by side."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from daemon.batching import TAIL_MIN_VIEWS, batch_views
from daemon.classify.lanes import LanePlan, ModelLanes, plan_lanes
from tests.daemon_support import (
    check_invariant,
    count,
    daemon_thread,
    make_station,
    noise_jpeg,
    settled,
    sha256_of,
    wait_until,
    write_file,
)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_cpu_gets_one_single_threaded_lane_per_thread() -> None:
    assert plan_lanes(4, None, on_gpu=False) == LanePlan(lanes=4, threads_per_lane=1)


def test_threads_null_means_every_usable_core() -> None:
    cores = len(os.sched_getaffinity(0))
    assert plan_lanes(None, None, on_gpu=False) == LanePlan(lanes=cores, threads_per_lane=1)


def test_a_gpu_gets_one_lane_with_every_thread() -> None:
    assert plan_lanes(4, None, on_gpu=True) == LanePlan(lanes=1, threads_per_lane=4)


def test_parallel_batches_share_the_threads_and_never_exceed_them() -> None:
    assert plan_lanes(8, 2, on_gpu=False) == LanePlan(lanes=2, threads_per_lane=4)
    capped = plan_lanes(2, 6, on_gpu=False)
    assert (capped.lanes, capped.threads_per_lane) == (2, 1)
    assert capped.adjusted == "model.parallel_batches 6 is more than the 2 thread(s)"


def test_threads_that_do_not_divide_among_the_lanes_are_said_unused() -> None:
    plan = plan_lanes(3, 2, on_gpu=False)
    assert (plan.lanes, plan.threads_per_lane) == (2, 1)
    assert plan.adjusted == "1 of the 3 model thread(s) left unused"


def test_lanes_set_torchs_threads_per_lane() -> None:
    lanes = ModelLanes(LanePlan(lanes=1, threads_per_lane=1))
    try:
        assert torch.get_num_threads() == 1
    finally:
        lanes.close()


def test_two_lanes_run_two_calls_at_the_same_time() -> None:
    # Each call waits at a barrier for the other: it passes only if both run at once.
    barrier = threading.Barrier(2, timeout=10)
    lanes = ModelLanes(LanePlan(lanes=2, threads_per_lane=1))
    try:
        futures = [lanes.submit(barrier.wait) for _ in range(2)]
        assert sorted(future.result(timeout=20) for future in futures) == [0, 1]
    finally:
        lanes.close()


def test_one_lane_runs_calls_one_after_the_other() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        threading.Event().wait(0.05)
        with lock:
            running -= 1

    lanes = ModelLanes(LanePlan(lanes=1, threads_per_lane=1))
    try:
        for future in [lanes.submit(call) for _ in range(4)]:
            future.result(timeout=20)
    finally:
        lanes.close()
    assert most == 1


def test_a_burst_through_two_lanes_is_classified_once_each(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # Small batches, so that many run while others are queued: an image whose batch is still
    # in a lane is queued in the database, and must not be taken a second time.
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={
            "name_or_path": str(tiny_model_dir),
            "batch_size": 2,
            "threads": 2,
            "parallel_batches": 2,
        },
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    sources = [write_file(outside / f"IMG_{n:04d}.JPG", noise_jpeg(n)) for n in range(30)]
    with daemon_thread(station):
        for source in sources:
            shutil.copy(source, station.inbox / source.name)
        wait_until(
            lambda: settled(station) and count(station, "images") >= len(sources),
            "every frame of the burst filed",
        )
    assert count(station, "classifications") == len(sources)
    assert check_invariant(station, {sha256_of(source) for source in sources}) == []


def test_a_batch_in_the_middle_of_a_burst_is_a_whole_batch() -> None:
    assert batch_views(16, 40, lanes=2, more=True) == 16
    assert batch_views(16, 6, lanes=2, more=True) == 16  # more is coming: worth the wait


def test_the_end_of_a_burst_is_shared_between_the_lanes() -> None:
    # Nothing decoding, nothing queued: 16 views left go 8 and 8, not 16 to one lane while
    # the other sits idle through them.
    assert batch_views(16, 16, lanes=2, more=False) == 8
    assert batch_views(16, 9, lanes=2, more=False) == 5
    assert batch_views(16, 40, lanes=2, more=False) == 16  # never more than a batch
    assert batch_views(16, 5, lanes=2, more=False) == TAIL_MIN_VIEWS  # no tiny shares
    assert batch_views(16, 16, lanes=1, more=False) == 16  # one lane: nothing to share
