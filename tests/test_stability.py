"""Tests for daemon.intake.stability: when a hinted path counts as quiet, with an injected clock."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from daemon.intake.stability import (
    FileSignature,
    Hint,
    Readiness,
    StabilityTracker,
    StablePath,
)
from tests.fake_clock import FakeClock

QUIET = 5.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> StabilityTracker:
    return StabilityTracker(QUIET, clock=clock)


def write(path: Path, data: bytes = b"\xff\xd8\xff\xe0frame") -> Path:
    path.write_bytes(data)
    return path


def taken_paths(tracker: StabilityTracker) -> list[Path]:
    return [found.path for found in tracker.take_stable()]


def test_not_stable_before_quiet_period_then_stable(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)

    assert tracker.take_stable() == []  # first look only starts the timer
    clock.advance(QUIET - 0.01)
    assert tracker.take_stable() == []
    assert tracker.pending_count() == 1
    clock.advance(0.01)

    info = image.stat()
    assert tracker.take_stable() == [
        StablePath(
            path=image,
            kind=Readiness.FILE,
            signature=FileSignature(info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev),
        )
    ]
    assert tracker.pending_count() == 0
    assert tracker.take_stable() == []


def test_growing_file_restarts_the_timer(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    clock.advance(4)
    with image.open("ab") as stream:
        stream.write(b"more bytes")

    assert tracker.take_stable() == []  # change seen: timer restarts now
    clock.advance(4)
    assert tracker.take_stable() == []  # only 4 s since the change
    clock.advance(1)
    assert taken_paths(tracker) == [image]


def test_mtime_change_alone_restarts_the_timer(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    clock.advance(4)
    mtime = image.stat().st_mtime_ns
    os.utime(image, ns=(mtime, mtime + 1_000_000_000))

    assert tracker.take_stable() == []
    clock.advance(4)
    assert tracker.take_stable() == []
    clock.advance(1)
    assert taken_paths(tracker) == [image]


def test_replaced_file_with_same_size_and_mtime_restarts_the_timer(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    info = image.stat()
    tracker.note(image)
    tracker.take_stable()
    clock.advance(4)
    replacement = write(tmp_path / "other", image.read_bytes())
    os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns))
    keep_inode_busy = tmp_path / "old"
    image.rename(keep_inode_busy)  # old inode stays alive, so the new one must differ
    replacement.rename(image)

    assert tracker.take_stable() == []
    clock.advance(QUIET)
    assert taken_paths(tracker) == [image]


def test_renoting_a_pending_path_does_not_reset_its_timer(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    clock.advance(3)
    tracker.note(image)
    tracker.note(image)
    assert tracker.pending_count() == 1
    clock.advance(2)

    assert taken_paths(tracker) == [image]


def test_zero_quiet_period_still_needs_two_looks(tmp_path: Path, clock: FakeClock) -> None:
    tracker = StabilityTracker(0, clock=clock)
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)

    assert tracker.take_stable() == []
    assert taken_paths(tracker) == [image]


def test_vanished_path_is_dropped(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    image.unlink()
    clock.advance(QUIET)

    assert tracker.take_stable() == []
    assert tracker.pending_count() == 0


def test_never_existing_path_is_dropped(tmp_path: Path, tracker: StabilityTracker) -> None:
    tracker.note(tmp_path / "nothing.jpg")
    tracker.note(tmp_path / "not_a_folder.jpg" / "child.jpg")
    write(tmp_path / "not_a_folder.jpg")

    assert tracker.take_stable() == []
    assert tracker.pending_count() == 0


def test_symlink_is_reported_as_link_without_following(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    target = write(tmp_path / "real.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "missing.jpg")
    tracker.note(link)
    tracker.note(dangling)
    tracker.take_stable()
    clock.advance(QUIET)

    found = tracker.take_stable()

    assert [(item.path, item.kind) for item in found] == [
        (dangling, Readiness.LINK),
        (link, Readiness.LINK),
    ]
    assert found[1].signature.inode == link.lstat().st_ino != target.stat().st_ino


def test_fifo_is_reported_as_other(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    tracker.note(fifo)
    tracker.take_stable()
    clock.advance(QUIET)

    assert [(item.path, item.kind) for item in tracker.take_stable()] == [(fifo, Readiness.OTHER)]


def test_directory_is_dropped_for_the_caller_to_scan(
    tmp_path: Path, tracker: StabilityTracker
) -> None:
    folder = tmp_path / "DCIM"
    folder.mkdir()
    tracker.note(folder)

    assert tracker.take_stable() == []
    assert tracker.pending_count() == 0


def test_clock_going_backwards_neither_takes_early_nor_stalls(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    clock.advance(4)
    clock.now -= 86_400  # a day backwards

    assert tracker.take_stable() == []  # not early
    clock.advance(QUIET - 0.01)
    assert tracker.take_stable() == []
    clock.advance(0.01)
    assert taken_paths(tracker) == [image]  # not stalled until the old reading comes back


def test_wall_clock_jump_does_not_take_a_file_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = StabilityTracker(60)  # the real monotonic clock
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.take_stable()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)

    assert tracker.take_stable() == []
    assert tracker.pending_count() == 1


def test_forget_removes_a_pending_path(tmp_path: Path, tracker: StabilityTracker) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    tracker.forget(image)
    tracker.forget(tmp_path / "never_noted.jpg")

    assert tracker.pending_count() == 0
    assert tracker.take_stable() == []


def test_lstat_error_keeps_path_pending_and_warns_once(
    tmp_path: Path,
    tracker: StabilityTracker,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    real_lstat = os.lstat

    def failing_lstat(path: Path) -> os.stat_result:
        if Path(path) == image:
            raise OSError(5, "Input/output error", str(path))
        return real_lstat(path)

    tracker.note(image)
    monkeypatch.setattr(os, "lstat", failing_lstat)
    with caplog.at_level(logging.WARNING, logger="daemon.intake.stability"):
        for _ in range(3):
            assert tracker.take_stable() == []
            clock.advance(QUIET)
    assert tracker.pending_count() == 1
    assert caplog.text.count(str(image)) == 1

    monkeypatch.setattr(os, "lstat", real_lstat)
    assert tracker.take_stable() == []  # the first real look starts the timer
    clock.advance(QUIET)
    assert taken_paths(tracker) == [image]


def test_notes_from_many_threads_while_taking(tmp_path: Path, clock: FakeClock) -> None:
    tracker = StabilityTracker(QUIET, clock=clock)
    images = [write(tmp_path / f"IMG_{number:04d}.JPG") for number in range(40)]
    missing = [tmp_path / f"gone_{number}.jpg" for number in range(40)]
    errors: list[BaseException] = []
    start = threading.Barrier(9)

    def note_everything() -> None:
        try:
            start.wait()
            for _ in range(20):
                for path in images + missing:
                    tracker.note(path)
        except BaseException as err:
            errors.append(err)

    def take_repeatedly() -> None:
        try:
            start.wait()
            for _ in range(50):
                tracker.take_stable()  # the clock stands still: nothing can be taken
                tracker.pending_count()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=note_everything) for _ in range(8)]
    threads.append(threading.Thread(target=take_repeatedly))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    tracker.take_stable()  # look at whatever was noted after the taker's last pass
    assert tracker.pending_count() == len(images)  # missing paths dropped, each image once
    clock.advance(QUIET)
    assert taken_paths(tracker) == images


# --- writers that keep a file open, and data cut short --------------------------------------

GRACE = 60.0


@pytest.fixture
def patient(clock: FakeClock) -> StabilityTracker:
    return StabilityTracker(QUIET, incomplete_grace_seconds=GRACE, clock=clock)


def test_a_file_still_open_for_writing_waits_for_its_close_then_a_quiet_period(
    tmp_path: Path, patient: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    patient.note(image, Hint.WRITTEN)
    assert patient.take_stable() == []
    clock.advance(QUIET * 3)  # quiet, but the writer never closed it: a stalled upload
    assert patient.take_stable() == []
    patient.note(image, Hint.CLOSED)
    assert patient.take_stable() == []  # the quiet period starts again at the close
    clock.advance(QUIET)
    found = patient.take_stable()
    assert [item.path for item in found] == [image]
    assert not found[0].waited_out


def test_a_file_never_closed_is_taken_once_the_grace_has_run_out(
    tmp_path: Path, patient: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG")
    patient.note(image, Hint.WRITTEN)
    assert patient.take_stable() == []
    clock.advance(GRACE - 0.01)
    assert patient.take_stable() == []
    clock.advance(0.01)
    found = patient.take_stable()
    assert [item.path for item in found] == [image]
    assert found[0].waited_out


def test_data_cut_short_is_held_for_the_grace_and_released_by_any_change(
    tmp_path: Path, patient: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG", b"\xff\xd8\xff\xe0half")
    patient.note(image)
    patient.take_stable()
    clock.advance(QUIET)
    (first,) = patient.take_stable()
    patient.hold_incomplete(first)
    clock.advance(QUIET)
    assert patient.take_stable() == []  # held: the rest of the upload may still come
    write(image, b"\xff\xd8\xff\xe0half and the rest")
    assert patient.take_stable() == []  # changed: a fresh quiet period, no hold
    clock.advance(QUIET)
    found = patient.take_stable()
    assert [item.path for item in found] == [image]
    assert not found[0].waited_out


def test_a_hold_on_unchanged_data_ends_with_the_grace(
    tmp_path: Path, patient: StabilityTracker, clock: FakeClock
) -> None:
    image = write(tmp_path / "IMG_0001.JPG", b"\xff\xd8\xff\xe0half")
    patient.note(image)
    patient.take_stable()
    clock.advance(QUIET)
    (first,) = patient.take_stable()
    patient.hold_incomplete(first)
    clock.advance(GRACE - QUIET - 0.01)
    assert patient.take_stable() == []
    clock.advance(0.01)  # the grace counts from when this data was first seen
    found = patient.take_stable()
    assert [item.path for item in found] == [image]
    assert found[0].waited_out


def test_the_next_look_is_due_at_once_for_a_new_path_then_when_its_quiet_period_ends(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    assert tracker.seconds_to_due() is None
    image = write(tmp_path / "IMG_0001.JPG")
    tracker.note(image)
    assert tracker.seconds_to_due() == 0.0  # not looked at yet: worth a look now

    assert tracker.take_stable(due_only=True) == []  # the first look starts the timer
    assert tracker.seconds_to_due() == QUIET
    clock.advance(1.0)
    assert tracker.seconds_to_due() == QUIET - 1.0
    tracker.take_stable()  # a full pass, nothing changed: the same due time
    assert tracker.seconds_to_due() == QUIET - 1.0
    tracker.note(image, Hint.WRITTEN)  # a writer holds it: the grace, not the quiet period
    tracker.take_stable()
    assert tracker.seconds_to_due() == 600.0 - 1.0


def test_a_due_only_pass_looks_at_new_and_due_paths_and_leaves_the_others(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    early, changing = write(tmp_path / "early.jpg"), write(tmp_path / "changing.jpg")
    tracker.note(early)
    tracker.note(changing)
    tracker.take_stable(due_only=True)
    clock.advance(QUIET / 2)
    late = write(tmp_path / "late.jpg")
    tracker.note(late)
    changing.write_bytes(b"\xff\xd8 rewritten, longer than before")

    assert tracker.take_stable(due_only=True) == []  # looked at `late` only
    assert tracker.seconds_to_due() == QUIET / 2  # when early's and changing's quiet ends
    clock.advance(QUIET / 2)
    # Both first looks are due now; the change to `changing` is seen and restarts its timer.
    assert taken_paths_due(tracker) == [early]
    clock.advance(QUIET / 2)
    assert taken_paths_due(tracker) == [late]
    clock.advance(QUIET / 2)
    assert taken_paths_due(tracker) == [changing]


def test_a_path_that_cannot_be_looked_at_waits_for_the_full_pass(
    tmp_path: Path, tracker: StabilityTracker, clock: FakeClock
) -> None:
    too_long = tmp_path / ("x" * 300 + ".jpg")  # lstat fails: ENAMETOOLONG
    tracker.note(too_long)
    assert tracker.take_stable(due_only=True) == []
    # Not due again (a due time of now would wake the intake thread in a loop)...
    assert tracker.seconds_to_due() is None
    assert tracker.pending_count() == 1  # ...but still pending, for the full passes


def taken_paths_due(tracker: StabilityTracker) -> list[Path]:
    return [found.path for found in tracker.take_stable(due_only=True)]
