"""End-to-end tests of the daemon: the real watcher, real folders, a tiny CLIP, real SQLite."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

import daemon.decode.jobs
import daemon.decode.pool
import daemon.delivery.router
import daemon.intake.watcher
import daemon.worker
from daemon.delivery.fileops import Entry
from daemon.storage.store import QueuedImage
from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    REPO_ROOT,
    SETTLE_TIMEOUT,
    Station,
    check_invariant,
    count,
    daemon_thread,
    images_done,
    make_station,
    migrated,
    noise_jpeg,
    query,
    scalar,
    settled,
    sha256_hex,
    sha256_of,
    start_daemon_process,
    stop_daemon_process,
    wait_for,
    wait_until,
    with_comment,
    without_work_ahead,
    write_file,
)
from tests.notify_receiver import NotifyReceiver

CLASSIFIED = {"positive", "uncertain", "negative"}
FAST_WATCH = {
    "quiet_seconds": 0.3,
    "incomplete_grace_seconds": 1.0,  # truncated test files reach quarantine quickly
    "rescan_interval_seconds": 60,
    "health_check_seconds": 0.5,
}


# --- making images -------------------------------------------------------------------------------


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (seed % 256, 80, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims a huge image: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"\x78\x9c")


def with_corrupt_exif(jpeg: bytes) -> bytes:
    """Insert an APP1 "Exif" segment whose TIFF header points far outside the segment."""
    payload = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\xff" * 16
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def exif_taken_on(stamp: str) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0132] = stamp  # DateTime in IFD0; the parser also falls back to it
    return exif


# --- reading the outcome -------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRow:
    id: int
    sha256: str
    original_path: str
    state: str
    decision: str | None
    final_path: str | None
    last_error: str | None


def image_rows(station: Station) -> list[ImageRow]:
    if not migrated(station):
        return []
    rows = query(
        station,
        "SELECT id, sha256, original_path, state, decision, final_path, last_error FROM images",
    )
    return [ImageRow(*row) for row in rows]  # type: ignore[arg-type]


def image_row(station: Station, path: Path) -> ImageRow | None:
    found = [row for row in image_rows(station) if row.original_path == str(path)]
    assert len(found) <= 1, f"{path} has {len(found)} image rows"
    return found[0] if found else None


def row_done(station: Station, path: Path) -> bool:
    row = image_row(station, path)
    return row is not None and row.state == "done"


def classifications_of(station: Station, image_id: int) -> int:
    return scalar(station, "SELECT count(*) FROM classifications WHERE image_id = ?", image_id)


@dataclass(frozen=True)
class RejectRow:
    source_path: str
    reason: str
    state: str
    final_path: str | None


def reject_rows(station: Station) -> list[RejectRow]:
    rows = query(station, "SELECT source_path, reason, state, final_path FROM rejects")
    return [RejectRow(*row) for row in rows]  # type: ignore[arg-type]


def recorded_paths(station: Station) -> list[str]:
    """Every path any row mentions: source, intended and final, of every table."""
    paths: list[str] = []
    for sql in (
        "SELECT original_path, original_name, intended_path, final_path FROM images",
        "SELECT source_path, intended_path, final_path FROM duplicates",
        "SELECT source_path, intended_path, final_path FROM rejects",
    ):
        paths += [str(value) for row in query(station, sql) for value in row if value is not None]
    return paths


def mentions(station: Station, fragment: str) -> bool:
    """True when any row names a file whose name contains `fragment`."""
    if not migrated(station):
        return False
    # Names only: tmp_path itself is named after the test and may hold the fragment.
    return any(fragment in Path(path).name for path in recorded_paths(station))


def destination_files(station: Station) -> list[Path]:
    """Files and links in the output folders, without quarantine notes."""
    return sorted(
        path
        for root in station.destinations()
        if root.exists()
        for path in root.rglob("*")
        if (path.is_symlink() or path.is_file()) and not path.name.endswith(".txt")
    )


def assert_classified(station: Station, row: ImageRow | None, content_sha256: str) -> Path:
    """The row is done, classified once, and its file sits in its decision's folder intact."""
    assert row is not None
    assert row.state == "done", row
    assert row.decision in CLASSIFIED, row
    assert row.sha256 == content_sha256
    assert classifications_of(station, row.id) == 1
    assert row.final_path is not None
    final = Path(row.final_path)
    assert final.is_file(), final
    assert sha256_of(final) == content_sha256
    paths = station.config().paths
    roots = {"positive": paths.review, "uncertain": paths.uncertain, "negative": paths.archive}
    assert roots[row.decision] in final.parents, final
    return final


def assert_quarantined(station: Station, path: Path, reason_fragment: str) -> None:
    """Decoding was given up: the file is in quarantine with a note that names the reason."""
    row = image_row(station, path)
    assert row is not None, f"{path} has no image row"
    assert (row.state, row.decision) == ("done", "quarantined"), row
    assert classifications_of(station, row.id) == 0
    assert row.final_path is not None
    final = Path(row.final_path)
    assert station.config().paths.quarantine in final.parents, final
    assert sha256_of(final) == row.sha256
    note = final.with_name(final.name + ".txt").read_text(encoding="utf-8")
    assert reason_fragment in note.lower(), note
    assert str(path) in note


def wait_settled(station: Station, images: int) -> None:
    def done() -> bool:
        return settled(station) and count(station, "images") >= images

    wait_until(done, f"{images} image rows and an idle daemon")


def wait_ready(service_log: pytest.LogCaptureFixture) -> None:
    """Wait for the in-process daemon's "ready" line: watching, with the model loaded."""
    wait_until(lambda: "ready in" in service_log.text, "the daemon to be ready")


# --- subprocess helpers --------------------------------------------------------------------------


def wait_for_log(log_path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    def logged() -> bool:
        assert process.poll() is None, f"daemon exited early:\n{log_path.read_text()}"
        return log_path.exists() and text in log_path.read_text(errors="replace")

    assert wait_for(logged, PROCESS_START_TIMEOUT, interval=0.2), (
        f"{text!r} not logged:\n{log_path.read_text(errors='replace')}"
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemon subprocesses started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture
def service_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures the daemon's start-up lines; set before the daemon starts, or they are lost."""
    caplog.set_level(logging.INFO, logger="daemon.service")
    return caplog


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the station, where files are prepared before they arrive."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


# --- 1, 2: cp and mv -----------------------------------------------------------------------------


def test_copied_jpeg_is_classified_and_moved_intact(station: Station, outside: Path) -> None:
    source = write_file(outside / "IMG_0001.JPG", noise_jpeg(1))
    with daemon_thread(station):
        shutil.copy(source, station.inbox / "IMG_0001.JPG")
        wait_settled(station, images=1)
    final = assert_classified(
        station, image_row(station, station.inbox / "IMG_0001.JPG"), sha256_of(source)
    )
    assert final.name == "IMG_0001.JPG"
    assert not (station.inbox / "IMG_0001.JPG").exists()
    assert check_invariant(station, {sha256_of(source)}) == []


def test_copied_real_sample_is_classified_and_moved_intact(
    station: Station, samples_dir: Path
) -> None:
    sources = [
        samples_dir / "other_animal" / "domestic_dog.jpg",
        samples_dir / "other_animal" / "snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG",
    ]  # an ordinary frame and a 20-megapixel one
    with daemon_thread(station):
        for source in sources:
            shutil.copy(source, station.inbox / source.name)
        wait_settled(station, images=len(sources))
    for source in sources:
        row = image_row(station, station.inbox / source.name)
        assert_classified(station, row, sha256_of(source))
    assert check_invariant(station, {sha256_of(source) for source in sources}) == []


def test_file_moved_in_from_outside_is_classified(station: Station, outside: Path) -> None:
    source = write_file(outside / "moved.jpg", noise_jpeg(2))
    content = sha256_of(source)
    with daemon_thread(station):
        source.rename(station.inbox / "moved.jpg")
        wait_settled(station, images=1)
    assert_classified(station, image_row(station, station.inbox / "moved.jpg"), content)
    assert check_invariant(station, {content}) == []


# --- 3, 4: uploads in progress -------------------------------------------------------------------


def test_pureftpd_upload_is_only_recorded_under_its_final_name(station: Station) -> None:
    data = noise_jpeg(3, size=(160, 120))
    temporary = station.inbox / ".pureftpd-upload.5f3a.jpg"
    final = station.inbox / "IMG_0042.JPG"
    with daemon_thread(station):
        with temporary.open("wb") as upload:
            for start in range(0, len(data), 4096):
                upload.write(data[start : start + 4096])
                upload.flush()
        # Written after the temporary file was complete: once this canary is done, the daemon
        # has had every chance to take the (quiet, complete) temporary file too.
        canary = write_file(station.inbox / "canary.jpg", noise_jpeg(4))
        wait_until(lambda: row_done(station, canary), "the canary")
        assert not mentions(station, "pureftpd")
        temporary.rename(final)
        wait_settled(station, images=2)
    assert_classified(station, image_row(station, final), sha256_hex(data))
    assert not mentions(station, "pureftpd")
    assert check_invariant(station, {sha256_hex(data)}) == []


def test_slow_writer_is_classified_once_with_its_full_content(
    tmp_path: Path, tiny_model_dir: Path, service_log: pytest.LogCaptureFixture
) -> None:
    # Pauses of a third of the quiet period, but longer than the intake's look interval: only
    # the quiet period (not the chance of looking mid-write) keeps the file from being taken.
    quiet, pause = 1.5, 0.5
    station = make_station(
        tmp_path / "station", tiny_model_dir, watch={**FAST_WATCH, "quiet_seconds": quiet}
    )
    data = noise_jpeg(5, size=(320, 240))
    step = len(data) // 7 + 1
    chunks = [data[start : start + step] for start in range(0, len(data), step)]
    slow = station.inbox / "slow.jpg"
    # By construction, not by measurement: the pauses alone outlast two quiet periods.
    assert len(chunks) * pause > 2 * quiet
    with daemon_thread(station):
        wait_ready(service_log)
        for chunk in chunks:
            with slow.open("ab") as writer:
                writer.write(chunk)
            assert not mentions(station, "slow.jpg"), "recorded while still being written"
            time.sleep(pause)  # the writer's pace, not a wait for the daemon
        wait_settled(station, images=1)
    assert count(station, "images") == 1
    assert count(station, "duplicates") == count(station, "rejects") == 0
    assert_classified(station, image_row(station, slow), sha256_hex(data))
    assert check_invariant(station, {sha256_hex(data)}) == []


# --- 5: a whole card folder ----------------------------------------------------------------------


def test_dcim_tree_moved_in_at_once_is_processed_entirely(station: Station, outside: Path) -> None:
    folder = outside / "DCIM" / "100RECNX"
    contents = {
        folder / f"IMG_{number:04d}.JPG": noise_jpeg(100 + number) for number in range(1, 21)
    }
    for path, data in contents.items():
        write_file(path, data)
    with daemon_thread(station):
        (outside / "DCIM").rename(station.inbox / "DCIM")
        wait_settled(station, images=20)
    arrived = station.inbox / "DCIM" / "100RECNX"
    for path, data in contents.items():
        assert_classified(station, image_row(station, arrived / path.name), sha256_hex(data))
    assert count(station, "images") == 20
    assert check_invariant(station, {sha256_hex(data) for data in contents.values()}) == []


# --- 6, 7: repeated bytes and repeated names -----------------------------------------------------


def test_same_bytes_under_three_names_are_classified_once(station: Station, outside: Path) -> None:
    source = write_file(outside / "IMG_0007.JPG", noise_jpeg(7))
    content = sha256_of(source)
    names = ["IMG_0007.JPG", "IMG_0007 (1).JPG", "backup/IMG_0007.JPG"]
    with daemon_thread(station):
        for name in names:
            (station.inbox / name).parent.mkdir(exist_ok=True)
            shutil.copy(source, station.inbox / name)
        wait_until(lambda: count(station, "duplicates") == 2, "two duplicate rows")
        wait_settled(station, images=1)
    assert count(station, "images") == 1
    assert count(station, "classifications") == 1
    duplicates_root = station.config().paths.duplicates
    duplicate_finals = [
        Path(str(row[0])) for row in query(station, "SELECT final_path FROM duplicates")
    ]
    assert all(duplicates_root in path.parents for path in duplicate_finals), duplicate_finals
    kept = destination_files(station)
    assert len(kept) == 3, kept
    assert all(sha256_of(path) == content for path in kept)
    assert check_invariant(station, {content}) == []


def test_same_name_different_content_are_both_kept(tmp_path: Path, tiny_model_dir: Path) -> None:
    # Thresholds at 1.0 send every frame to the archive, and without deployments (a/ and b/
    # would be two) both land in one folder.
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        decision={"positive_threshold": 1.0, "uncertain_threshold": 1.0},
        deployments_from={"levels": 0},
    )
    same_day = exif_taken_on("2024:03:15 02:11:00")
    first, second = noise_jpeg(8, exif=same_day), noise_jpeg(9, exif=same_day)
    with daemon_thread(station):
        write_file(station.inbox / "a" / "IMG_0001.JPG", first)
        write_file(station.inbox / "b" / "IMG_0001.JPG", second)
        wait_settled(station, images=2)
    finals = [
        assert_classified(station, image_row(station, station.inbox / card / "IMG_0001.JPG"), sha)
        for card, sha in (("a", sha256_hex(first)), ("b", sha256_hex(second)))
    ]
    day_folder = station.config().paths.archive / "2024-03-15"
    assert {path.parent for path in finals} == {day_folder}
    names = {path.name for path in finals}
    assert len(names) == 2 and "IMG_0001.JPG" in names
    (renamed,) = names - {"IMG_0001.JPG"}
    assert renamed.startswith("IMG_0001") and renamed.endswith(".JPG")
    assert check_invariant(station, {sha256_hex(first), sha256_hex(second)}) == []


def test_inbox_configured_as_a_symlink_is_watched_through_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # Stations point the inbox at a card reader's or an FTP account's folder with a symlink.
    # The link itself must never be taken for a (symlinked) arrival and quarantined.
    card = tmp_path / "card-reader"
    card.mkdir()
    paths = {"inbox": "inbox-link", "review": "review", "archive": "archive"}
    station = make_station(tmp_path / "station", tiny_model_dir, paths=paths | {"quarantine": "q"})
    link = station.root / "inbox-link"
    link.symlink_to(card, target_is_directory=True)
    early, late = noise_jpeg(21), noise_jpeg(22)
    write_file(card / "IMG_0001.JPG", early)  # found by the start-up scan
    with daemon_thread(station):
        wait_settled(station, images=1)
        write_file(link / "IMG_0002.JPG", late)  # reported by the watcher
        wait_settled(station, images=2)

    assert link.is_symlink() and link.resolve() == card.resolve()
    assert list(card.iterdir()) == []
    assert not (station.root / "q").exists() or not any((station.root / "q").rglob("*"))
    assert count(station, "rejects") == 0
    assert check_invariant(station, {sha256_hex(early), sha256_hex(late)}) == []


# --- 8: files the watcher never told us about ----------------------------------------------------


def test_rescan_finds_files_the_watcher_never_reported(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interval = 1.5
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        paths={
            "inbox": [{"path": "inbox", "polling": False}],
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
        },
        watch={**FAST_WATCH, "rescan_interval_seconds": interval},
    )
    # A deaf watcher: no observer is ever started, so no event is ever delivered.
    monkeypatch.setattr(daemon.intake.watcher.InboxWatcher, "start", lambda self: None)
    early = write_file(station.inbox / "before-start.jpg", noise_jpeg(10))
    early_sha = sha256_of(early)
    late_data = noise_jpeg(11)
    with daemon_thread(station):
        wait_until(lambda: row_done(station, early), "the file found by the start-up scan")
        late = write_file(station.inbox / "while-deaf.jpg", late_data)
        # The start-up scan is over and no event ever comes: only a periodic rescan can find
        # it. The wait is a hang guard (SETTLE_TIMEOUT), not a claim about how soon.
        wait_until(lambda: row_done(station, late), "the file found by the periodic rescan")
    assert_classified(station, image_row(station, early), early_sha)
    assert_classified(station, image_row(station, late), sha256_hex(late_data))
    assert check_invariant(station, {early_sha, sha256_hex(late_data)}) == []


# --- 9: bad input --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # expected here
def test_bad_inputs_each_get_an_outcome_and_the_daemon_goes_on(
    station: Station, outside: Path
) -> None:
    inbox = station.inbox
    good = noise_jpeg(20, size=(128, 96))
    classified = {
        "png-inside.jpg": png_bytes(21),
        "corrupt-exif.jpg": with_corrupt_exif(noise_jpeg(22)),
        "camera trap 01.jpg": noise_jpeg(23),
        "тигр 1.jpg": noise_jpeg(24),
        "night\nshot.jpg": noise_jpeg(25),
    }
    quarantined = {
        "zero.jpg": (b"", "0 bytes"),
        "truncated.jpg": (good[: len(good) // 2], "truncated"),
        "random.jpg": (random.Random(26).randbytes(5000), "not an image"),
        "bomb.jpg": (png_bomb_header(40_000, 40_000), "pixels"),
    }
    target = write_file(outside / "target.jpg", noise_jpeg(27))
    target_sha = sha256_of(target)
    with daemon_thread(station):
        for name, data in classified.items():
            write_file(inbox / name, data)
        for name, (data, _) in quarantined.items():
            write_file(inbox / name, data)
        (inbox / "link.jpg").symlink_to(target)
        fleeting = write_file(inbox / "fleeting.jpg", noise_jpeg(28))
        fleeting.unlink()  # gone well within the quiet period
        expected_images = len(classified) + len(quarantined)
        wait_until(lambda: count(station, "rejects") == 1, "the symlink's reject row")
        wait_settled(station, images=expected_images)
        # Dropped after every bad input has its outcome: the daemon must still be working.
        after = write_file(inbox / "after.jpg", good)
        wait_settled(station, images=expected_images + 1)

    for name, data in classified.items():
        final = assert_classified(station, image_row(station, inbox / name), sha256_hex(data))
        if "\n" in name:
            assert "\n" not in final.name
        else:
            assert final.name == name
    for name, (_, reason) in quarantined.items():
        assert_quarantined(station, inbox / name, reason)
    assert_classified(station, image_row(station, after), sha256_hex(good))

    (reject,) = reject_rows(station)
    assert (reject.source_path, reject.state) == (str(inbox / "link.jpg"), "done")
    assert "symbolic link" in reject.reason
    assert reject.final_path is not None
    moved_link = Path(reject.final_path)
    assert station.config().paths.quarantine in moved_link.parents
    assert moved_link.is_symlink() and moved_link.readlink() == target
    assert "symbolic link" in moved_link.with_name(moved_link.name + ".txt").read_text()
    assert target.is_file() and sha256_of(target) == target_sha
    assert target_sha not in {row.sha256 for row in image_rows(station)}

    assert not mentions(station, "fleeting")
    assert count(station, "images") == expected_images + 1
    assert check_invariant(station) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file regardless")
def test_unreadable_file_is_rejected_to_quarantine(station: Station) -> None:
    locked = write_file(station.inbox / "locked.jpg", noise_jpeg(30))
    locked.chmod(0)
    try:
        with daemon_thread(station):
            wait_until(lambda: count(station, "rejects") == 1, "a reject row")
            wait_until(lambda: settled(station), "an idle daemon")
    finally:
        for path in [locked, *destination_files(station)]:
            if path.exists() and not path.is_symlink():
                path.chmod(0o644)
    (reject,) = reject_rows(station)
    assert (reject.source_path, reject.state) == (str(locked), "done")
    assert "cannot be read" in reject.reason
    assert reject.final_path is not None
    moved = Path(reject.final_path)
    assert station.config().paths.quarantine in moved.parents
    assert sha256_of(moved) == sha256_hex(noise_jpeg(30))  # moved whole, never read as an image
    assert "cannot be read" in moved.with_name(moved.name + ".txt").read_text()
    assert count(station, "images") == 0
    assert check_invariant(station) == []


class DecodeGate:
    """Holds the worker's decoding of chosen file names until released: a very slow worker."""

    def __init__(self) -> None:
        self.held_names: set[str] = set()
        self._open = threading.Event()

    def hold(self, item: QueuedImage) -> None:
        if Path(item.path).name in self.held_names:
            self._open.wait(timeout=SETTLE_TIMEOUT)

    def release(self) -> None:
        self._open.set()


@pytest.fixture
def decode_gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecodeGate]:
    gate = DecodeGate()
    original_submit = daemon.worker.Worker._submit

    def held_submit(
        self: daemon.worker.Worker, item: QueuedImage
    ) -> Future[daemon.decode.jobs.DecodeOutcome]:
        gate.hold(item)  # the worker thread waits: nothing is read until release
        return original_submit(self, item)

    monkeypatch.setattr(daemon.worker.Worker, "_submit", held_submit)
    without_work_ahead(monkeypatch)  # the row's own decode is what is held
    yield gate
    gate.release()


def vanish_after_queueing(station: Station, gate: DecodeGate, path: Path, data: bytes) -> None:
    """Drop a file, let it be queued, delete it before the worker reads it, then let go."""
    gate.held_names.add(path.name)
    write_file(path, data)
    wait_until(lambda: image_row(station, path) is not None, f"the row of {path.name}")
    path.unlink()
    gate.release()
    wait_until(lambda: row_done(station, path), f"the outcome of {path.name}")


def test_file_deleted_after_it_was_queued_is_recorded_as_vanished(
    station: Station, decode_gate: DecodeGate
) -> None:
    """The row exists, then the file goes before the worker reads it: recorded, not lost."""
    doomed = station.inbox / "doomed.jpg"
    good = noise_jpeg(31)
    with daemon_thread(station):
        vanish_after_queueing(station, decode_gate, doomed, noise_jpeg(32))
        after = write_file(station.inbox / "after.jpg", good)
        wait_settled(station, images=2)
    row = image_row(station, doomed)
    assert row is not None
    assert (row.state, row.decision, row.final_path) == ("done", "vanished", None)
    assert "disappeared" in str(row.last_error)
    assert classifications_of(station, row.id) == 0
    assert_classified(station, image_row(station, after), sha256_hex(good))
    assert check_invariant(station) == []


def test_vanished_content_is_classified_when_it_arrives_again(
    station: Station, decode_gate: DecodeGate
) -> None:
    """Someone took the file out before it was read, then copied the card again: the frame
    must be classified now, not filed as a duplicate of an image nobody ever looked at."""
    data = noise_jpeg(33)
    with daemon_thread(station):
        vanish_after_queueing(station, decode_gate, station.inbox / "IMG_0009.JPG", data)
        again = write_file(station.inbox / "again" / "IMG_0009.JPG", data)
        wait_settled(station, images=1)
        wait_until(lambda: row_done(station, again), "the returned file's outcome")
    assert count(station, "images") == 1
    assert count(station, "duplicates") == 0
    assert_classified(station, image_row(station, again), sha256_hex(data))
    assert check_invariant(station, {sha256_hex(data)}) == []


def test_a_frame_renamed_in_the_inbox_while_queued_is_classified_under_its_new_name(
    station: Station, decode_gate: DecodeGate
) -> None:
    """Renamed (or moved to a sub-folder) after it was queued and before it was read: the same
    frame under a new name. It used to be filed in archive/duplicates, never classified."""
    data = noise_jpeg(35)
    first = station.inbox / "IMG_0011.JPG"
    renamed = station.inbox / "sorted" / "IMG_0011.JPG"
    with daemon_thread(station):
        decode_gate.held_names.add(first.name)
        write_file(first, data)
        wait_until(lambda: image_row(station, first) is not None, "the first name's row")
        renamed.parent.mkdir()
        first.rename(renamed)
        wait_until(
            lambda: image_row(station, renamed) is not None or count(station, "duplicates") > 0,
            "the new name recorded",
        )
        decode_gate.release()
        wait_until(lambda: row_done(station, renamed), "the renamed frame's outcome")
        wait_settled(station, images=1)
    assert count(station, "images") == 1
    assert count(station, "duplicates") == 0
    assert_classified(station, image_row(station, renamed), sha256_hex(data))
    assert check_invariant(station, {sha256_hex(data)}) == []


def test_a_frame_renamed_while_queued_whose_old_name_is_reused_is_classified_under_its_new_one(
    station: Station, decode_gate: DecodeGate
) -> None:
    """Hostile review F4: staff renamed IMG_0001.JPG and the next card's IMG_0001.JPG took the
    old name; the renamed frame was filed as a duplicate of itself and never classified."""
    renamed_data, newcomer_data = noise_jpeg(36), noise_jpeg(37, size=(80, 60))
    first = station.inbox / "IMG_0001.JPG"
    renamed = station.inbox / "cam1_IMG_0001.JPG"
    with daemon_thread(station):
        decode_gate.held_names.add(first.name)
        write_file(first, renamed_data)
        wait_until(lambda: image_row(station, first) is not None, "the first frame's row")
        first.rename(renamed)
        write_file(first, newcomer_data)  # the next card, same camera counter
        wait_until(
            lambda: image_row(station, renamed) is not None or count(station, "duplicates") > 0,
            "the new name recorded",
        )
        decode_gate.release()
        wait_settled(station, images=2)
    assert count(station, "duplicates") == 0
    assert_classified(station, image_row(station, renamed), sha256_hex(renamed_data))
    assert_classified(station, image_row(station, first), sha256_hex(newcomer_data))
    assert check_invariant(station, {sha256_hex(renamed_data), sha256_hex(newcomer_data)}) == []


def test_classified_content_that_vanished_is_filed_when_it_arrives_again(
    station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file went between classification and its move; a later copy is filed under the
    decision already made, without a second classification."""
    data = noise_jpeg(34)
    first = station.inbox / "IMG_0010.JPG"
    original_claim = daemon.delivery.router.claim

    def taken_away_first(folder: int, name: str, tag: str, *, shown: str) -> Entry | None:
        if Path(shown) == first and first.exists():
            first.unlink()  # someone takes the file away just before the router moves it
        return original_claim(folder, name, tag, shown=shown)

    monkeypatch.setattr(daemon.delivery.router, "claim", taken_away_first)
    with daemon_thread(station):
        write_file(first, data)
        wait_until(lambda: row_done(station, first), "the first copy's outcome")
        row = image_row(station, first)
        assert row is not None and row.decision == "vanished"
        assert classifications_of(station, row.id) == 1
        again = write_file(station.inbox / "again" / "IMG_0010.JPG", data)
        wait_until(lambda: row_done(station, again), "the returned file's outcome")
        wait_settled(station, images=1)
    assert count(station, "images") == 1
    assert count(station, "duplicates") == 0
    assert_classified(station, image_row(station, again), sha256_hex(data))
    assert check_invariant(station, {sha256_hex(data)}) == []


# --- 10: SIGTERM while busy ----------------------------------------------------------------------


def test_sigterm_while_busy_exits_cleanly_and_a_restart_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={"name_or_path": str(tiny_model_dir), "batch_size": 4, "threads": 1},
    )
    # Full-size frames, so the stream takes long enough to be caught in the middle.
    frame = noise_jpeg(200, size=(1600, 1200))
    contents = {f"IMG_{n:04d}.JPG": with_comment(frame, f"frame {n}") for n in range(30)}
    first_log = tmp_path / "first.log"
    processes.append(start_daemon_process(station, first_log))
    wait_for_log(first_log, "ready in", processes[0])
    for name, data in contents.items():
        write_file(station.inbox / name, data)
    wait_until(
        lambda: count(station, "classifications") > 0, "the first classified batch", interval=0.01
    )
    assert images_done(station) < len(contents), "SIGTERM came after the work: nothing tested"
    assert stop_daemon_process(processes[0], timeout=30) == 0
    assert "received SIGTERM" in first_log.read_text(errors="replace")

    second_log = tmp_path / "second.log"
    processes.append(start_daemon_process(station, second_log))
    wait_for_log(second_log, "ready in", processes[1])
    wait_settled(station, images=len(contents))
    assert stop_daemon_process(processes[1], timeout=30) == 0
    assert count(station, "images") == len(contents)
    assert count(station, "classifications") == len(contents)
    assert check_invariant(station, {sha256_hex(data) for data in contents.values()}) == []


# --- 11: status ----------------------------------------------------------------------------------


def test_status_json_reflects_the_run(station: Station) -> None:
    with daemon_thread(station):
        for number in range(3):
            write_file(station.inbox / f"good-{number}.jpg", noise_jpeg(40 + number))
        write_file(station.inbox / "again.jpg", noise_jpeg(40))
        write_file(station.inbox / "noise.jpg", random.Random(43).randbytes(2000))
        wait_until(lambda: count(station, "duplicates") == 1, "the duplicate row")
        wait_settled(station, images=4)
    completed = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "-c", str(station.config_path), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    images = count(station, "images")
    assert report["images_by_state"] == {"queued": 0, "routing": 0, "done": images}
    assert report["queue_depth"] == 0 and report["moves_waiting"] == 0
    assert report["last_processed_at"] is not None
    by_decision = {
        str(decision): number
        for decision, number in query(
            station, "SELECT decision, count(*) FROM images GROUP BY decision"
        )
    }
    today = report["today"]
    assert {k: v for k, v in today.items() if k in by_decision} == by_decision
    assert today["duplicate"] == 1 and today["rejected"] == 0
    assert today["quarantined"] == 1
    assert sum(today.values()) == images + count(station, "duplicates") + count(station, "rejects")
    assert check_invariant(station) == []


# --- 12: systemd notifications -------------------------------------------------------------------


def test_systemd_hears_ready_watchdog_and_stopping(
    station: Station,
    tmp_path: Path,
    notify_receiver: NotifyReceiver,
    processes: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_receiver.path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # systemd asks for pings (WatchdogSec=30)
    log = tmp_path / "daemon.log"
    processes.append(start_daemon_process(station, log))
    assert notify_receiver.wait_for_line("READY=1", PROCESS_START_TIMEOUT), log.read_text()
    assert "Watching inbox" in log.read_text(errors="replace")  # READY=1 came after the set-up
    assert notify_receiver.wait_for_line("WATCHDOG=1", 10), notify_receiver.messages
    lines = notify_receiver.lines()
    assert lines.index("WATCHDOG=1") > lines.index("READY=1")  # pings only once ready
    processes[0].send_signal(signal.SIGTERM)
    assert notify_receiver.wait_for_line("STOPPING=1", 30), notify_receiver.messages
    assert processes[0].wait(timeout=30) == 0
    assert check_invariant(station) == []
