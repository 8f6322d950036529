"""Destination disk full: moves wait in the inbox, nothing is half-moved, work resumes by itself."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from daemon.delivery.fileops import PARTIAL_PREFIX
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    images_done,
    make_station,
    mounted_tmpfs,
    noise_jpeg,
    query,
    scalar,
    settled,
    sha256_of,
    wait_for,
)

DISK_SIZE = "2m"
HEADROOM = 40 * 1024  # left free beside the filler: room for one or two frames, not for all
GOOD_FILES = 16
DUPLICATES = 2  # copies of good frames: their moves go to the full disk too
BAD_FILES = 2  # truncated JPEGs: quarantined, also onto the full disk
FRAME_SIZE = (128, 96)  # about 30 KB of incompressible noise per frame
TIMEOUT = 60.0
RETRY_SECONDS = 0.5


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: another filesystem than tmp_path, so every move is a verified copy."""
    with mounted_tmpfs(tmp_path / "station" / "out", DISK_SIZE) as mount_point:
        yield mount_point


def fill(disk: Path) -> Path:
    """Fill the disk up to HEADROOM free bytes with one filler file."""
    filler = disk / "filler.bin"
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    with filler.open("wb") as out:
        out.write(b"\0" * (free - HEADROOM))
        out.flush()
        os.fsync(out.fileno())
    return filler


def prepare_frames(outside: Path) -> list[Path]:
    """Good frames, byte-identical copies and truncated ones, outside the inbox."""
    outside.mkdir()
    frames = []
    for number in range(GOOD_FILES):
        frames.append(outside / f"IMG_{number:04d}.JPG")
        frames[-1].write_bytes(noise_jpeg(7_000 + number, size=FRAME_SIZE))
    for number in range(DUPLICATES):
        frames.append(outside / f"COPY_{number:04d}.JPG")
        frames[-1].write_bytes(frames[number].read_bytes())
    for number in range(BAD_FILES):
        whole = noise_jpeg(8_000 + number, size=FRAME_SIZE)
        frames.append(outside / f"CUT_{number:04d}.JPG")
        frames[-1].write_bytes(whole[: len(whole) // 2])
    return frames


def full_disk_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in list(caplog.records)
        if record.name == "daemon.delivery.router"
        and record.levelno >= logging.ERROR
        and "No space left on device" in record.getMessage()
    ]


def temp_copies(disk: Path) -> set[Path]:
    return {path for path in disk.rglob(f"{PARTIAL_PREFIX}*")}


@dataclass
class TempCopyLooks:
    total: int = 0
    with_temp_copy: int = 0
    seen: set[Path] = field(default_factory=set)


def look_for_temp_copies(disk: Path, caplog: pytest.LogCaptureFixture) -> TempCopyLooks:
    """Look at the disk every 10 ms for at least 100 looks and two more failed retries."""
    looks = TempCopyLooks()
    lines_before = len(full_disk_lines(caplog))

    def look() -> bool:
        found = temp_copies(disk)
        looks.total += 1
        looks.with_temp_copy += bool(found)
        looks.seen |= found
        return looks.total >= 100 and len(full_disk_lines(caplog)) >= lines_before + 2

    assert wait_for(look, TIMEOUT, interval=0.01), "the daemon stopped retrying the move"
    return looks


def half_moved_problems(station: Station, contents: dict[str, str]) -> list[str]:
    """While the disk is full: each file is either still in the inbox or wholly at its place.

    A small file may still fit and be moved while we look: a row that looks wrong is looked at
    again until it is right or a few seconds have passed, so only a state that lasts counts.
    """
    sources = [str(row[0]) for row in query(station, "SELECT original_path FROM images")]
    problems = []
    for source in sources:
        if not wait_for(partial(image_is_sound, station, source, contents), 3.0):
            problems.append(str(image_problem(station, source, contents)))
    for copy, state in query(station, "SELECT source_path, state FROM duplicates"):
        if state != "done" and not Path(str(copy)).is_file():
            problems.append(f"duplicate {copy}: {state}, but not in the inbox")
    return problems


def image_is_sound(station: Station, source: str, contents: dict[str, str]) -> bool:
    return image_problem(station, source, contents) is None


def image_problem(station: Station, source: str, contents: dict[str, str]) -> str | None:
    ((state, intended, final),) = query(
        station,
        "SELECT state, intended_path, final_path FROM images WHERE original_path = ?",
        source,
    )
    source_path = Path(source)
    if state == "done":
        if final is None or not Path(str(final)).is_file() or source_path.exists():
            return f"{source}: done, but not (only) at {final}"
        return None
    if not source_path.is_file() or sha256_of(source_path) != contents[source_path.name]:
        return f"{source}: {state}, but not intact in the inbox"
    if state == "routing" and intended is None:
        return f"{source}: routing without an intended path"
    if intended is not None and Path(str(intended)).exists():
        return f"{source}: still in the inbox, yet {intended} exists"
    return None


def inbox_count(station: Station) -> int:
    return sum(1 for path in station.inbox.iterdir() if path.is_file())


def moved_count(station: Station) -> int:
    """Files moved out of the inbox: done images and done duplicates."""
    return images_done(station) + scalar(
        station, "SELECT count(*) FROM duplicates WHERE state = 'done'"
    )


def routing_rows(station: Station) -> int:
    return scalar(station, "SELECT count(*) FROM images WHERE state = 'routing'")


@pytest.mark.fault
def test_full_destination_disk_keeps_files_in_the_inbox_until_space_returns(
    tmp_path: Path,
    tiny_model_dir: Path,
    small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        paths={
            "inbox": "inbox",
            "review": "out/review",
            "archive": "out/archive",
            "quarantine": "out/quarantine",
        },
        worker={
            "batch_max_wait_seconds": 0.2,
            "retry_delay_seconds": 0.2,
            "max_decode_attempts": 2,
            "destination_retry_seconds": RETRY_SECONDS,
        },
    )
    frames = prepare_frames(tmp_path / "outside")
    contents = {frame.name: sha256_of(frame) for frame in frames}
    distinct = len(set(contents.values()))
    filler = fill(small_disk)
    caplog.set_level(logging.INFO, logger="daemon")
    with daemon_thread(station):
        assert wait_for(lambda: "ready in" in caplog.text, TIMEOUT), "daemon not ready"
        for frame in frames:
            frame.rename(station.inbox / frame.name)  # as an upload tool publishes a file

        def stuck() -> bool:
            recorded = scalar(station, "SELECT count(*) FROM images") == distinct
            return len(full_disk_lines(caplog)) >= 2 and recorded and routing_rows(station) > 0

        assert wait_for(stuck, TIMEOUT), f"the full disk was never hit: {caplog.text[-2000:]}"
        looks = look_for_temp_copies(small_disk, caplog)
        problems = half_moved_problems(station, contents)
        # Counted twice over if a small file is moved between the two counts: look again.
        each_in_one_place = wait_for(
            lambda: inbox_count(station) + moved_count(station) == len(frames), 3.0
        )
        waiting_in_inbox, moved_while_full = inbox_count(station), moved_count(station)
        routing_while_full = routing_rows(station)
        free_while_full = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize

        filler.unlink()
        freed = time.monotonic()
        drained = wait_for(lambda: images_done(station) == distinct and settled(station), TIMEOUT)
        drain_seconds = time.monotonic() - freed
        lines_total = len(full_disk_lines(caplog))

    first_line = full_disk_lines(caplog)[0]
    print("\n==== fault: destination disk full (2 MiB tmpfs, copy across filesystems) ====")
    print(f"files dropped:                      {len(frames)} ({distinct} distinct contents)")
    print(f"free on the destination when full:  {free_while_full} bytes")
    print(f"moved before the disk was full:     {moved_while_full} files")
    print(f"waiting in the inbox while full:    {waiting_in_inbox} files")
    print(f"classified, waiting to be moved:    {routing_while_full} images")
    print(f"looks with a temp copy present:     {looks.with_temp_copy} of {looks.total}")
    print(f"'No space left' log lines:          {lines_total}")
    print(f"first such line:                    {first_line}")
    print(f"drain after the filler was deleted: {drain_seconds:.2f} s")
    print("=" * 60)

    # A retry's temp copy lives for an instant; one left behind stays until the next retry.
    assert looks.with_temp_copy <= looks.total // 2, f"temp copies left behind: {looks.seen}"
    assert problems == []
    assert each_in_one_place, f"{waiting_in_inbox} in the inbox + {moved_while_full} moved"
    assert waiting_in_inbox > 0
    assert "wait in the inbox until it is fixed" in first_line
    assert str(station.inbox) in first_line  # the line names the file
    assert drained, f"did not resume after space returned: {caplog.text[-2000:]}"
    assert temp_copies(small_disk) == set()
    assert check_invariant(station, set(contents.values())) == []
