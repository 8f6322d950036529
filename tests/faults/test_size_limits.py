"""Size limits: an oversized file is quarantined unread, and side-by-side decodes share a pixel
budget so that images within the limits never add up past the unit's MemoryMax."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from daemon.decode.pool import DecoderPool
from tests.daemon_support import check_invariant, daemon_thread, make_station, query, settled
from tests.faults.fault_kit import count, noise_jpeg, report, wait_until, write_file
from tests.poison_decoders import logged_decode
from tests.test_decodepool import RESULT_WAIT, job_for

OVERSIZED = 300_000_000
LIMIT = 200_000_000  # images.max_file_bytes' default


def _bytes_read_by_this_process() -> int | None:
    """rchar from /proc/self/io: every byte read() by any thread of this process."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


@pytest.mark.fault
def test_an_oversized_file_is_quarantined_with_its_size_and_never_read(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    write_file(station.inbox / "canary.jpg", noise_jpeg(20))
    with daemon_thread(station):
        wait_until(lambda: count(station, "images") == 1 and settled(station), "the canary")
        read_before = _bytes_read_by_this_process()
        dropped = time.monotonic()
        big = write_file(station.inbox / "DCIM" / "BIG_0001.JPG", b"\xff\xd8\xff\xe0")
        with big.open("r+b") as upload:  # a writer that sets the size and closes the file
            os.truncate(upload.fileno(), OVERSIZED)  # sparse: 300 MB of holes cost no disk
        wait_until(
            lambda: count(station, "images") + count(station, "rejects") == 2 and settled(station),
            "the oversized file",
        )
        seconds = time.monotonic() - dropped
        read_after = _bytes_read_by_this_process()
        rejects = query(station, "SELECT reason, final_path FROM rejects")
        problems = check_invariant(station)
    read_mb = (
        None if read_before is None or read_after is None else (read_after - read_before) / 1e6
    )
    report(
        "oversized file (sparse, 300 MB)",
        {
            "recorded": rejects or query(station, "SELECT decision, last_error FROM images"),
            "images rows (canary only)": count(station, "images"),
            "MB read by the daemon meanwhile": "n/a" if read_mb is None else f"{read_mb:.1f}",
            "seconds from drop to quarantined": f"{seconds:.1f}",
            "invariant problems": problems,
        },
    )
    assert len(rejects) == 1, "the oversized file was not rejected before it was read"
    reason, final_path = rejects[0]
    assert f"{OVERSIZED} bytes" in str(reason) and str(LIMIT) in str(reason), reason
    assert final_path is not None and Path(str(final_path)).stat().st_size == OVERSIZED
    assert count(station, "images") == 1  # never queued, so never sent to a decoder
    if read_mb is not None:
        assert read_mb < OVERSIZED / 1e6 / 10, "the daemon read the oversized file"
    assert problems == []


# --- the decoded-pixel budget with real decoder processes -------------------------------------

BUDGET = 12_000_000
# name -> (width, height, decoded pixels): two large PNGs that do not fit side by side, one
# larger than the whole budget, and small JPEGs (decoded at 1/2 scale with a 224 draft).
PICTURES = {
    "large-1.png": (3000, 3000, 9_000_000),
    "large-2.png": (3000, 3000, 9_000_000),
    "huge.png": (4000, 4000, 16_000_000),
    **{f"small-{n}.jpg": (640, 480, 320 * 240) for n in range(4)},
}


def _pictures(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (name, (width, height, _)) in enumerate(PICTURES.items()):
        path = folder / name
        if name.endswith(".png"):
            buffer = io.BytesIO()
            Image.new("RGB", (width, height), (index * 30, 90, 160)).save(buffer, "PNG")
            path.write_bytes(buffer.getvalue())
        else:
            path.write_bytes(noise_jpeg(30 + index, size=(width, height)))
        paths.append(path)
    return paths


@contextmanager
def _pool(budget: int | None) -> Iterator[DecoderPool]:
    pool = DecoderPool(2, timeout=60, job_function=logged_decode, pixel_budget=budget)
    try:
        yield pool
    finally:
        pool.close()


def _decode_all(folder: Path, budget: int | None) -> tuple[int, int, int, int]:
    """(peak decoded pixels in flight, jobs that ran beside another, decoded ok, peak RSS KiB)."""
    paths = _pictures(folder)
    with _pool(budget) as pool:
        futures = [pool.submit(job_for(path)) for path in paths]
        outcomes = [future.result(timeout=RESULT_WAIT * 3) for future in futures]
    runs = [line.split("\t") for line in (folder / "decodes.log").read_text().splitlines()]
    spans = [(int(start), int(end), PICTURES[name][2]) for name, _, start, end, _ in runs]
    peak = max(sum(p for s, e, p in spans if s <= start < e) for start, _, _ in spans)
    beside = sum(
        any(s < end and start < e for s, e, _ in spans if s != start) for start, end, _ in spans
    )
    decoded = sum(outcome.pixels is not None for outcome in outcomes)
    return peak, beside, decoded, max(int(run[4]) for run in runs)


@pytest.mark.fault
def test_decoder_processes_never_hold_more_pixels_together_than_the_budget(tmp_path: Path) -> None:
    peak, beside, decoded, rss_kib = _decode_all(tmp_path / "budget", BUDGET)
    unbounded_peak, unbounded_beside, _, _ = _decode_all(tmp_path / "unbounded", None)
    report(
        "decoded-pixel budget, 2 real decoder processes",
        {
            "budget (decoded pixels)": f"{BUDGET:,}",
            "peak in flight with the budget": f"{peak:,}",
            "peak in flight without it": f"{unbounded_peak:,}",
            "jobs run beside another (with / without)": f"{beside} / {unbounded_beside}",
            "decoded": f"{decoded} of {len(PICTURES)}",
            "largest decoder peak RSS": f"{rss_kib / 1024:.0f} MiB",
        },
    )
    assert decoded == len(PICTURES)  # the over-budget image ran too (alone): nothing starves
    largest = max(pixels for _, _, pixels in PICTURES.values())
    assert peak <= max(BUDGET, largest)
    assert peak <= BUDGET or peak == largest  # over the budget only when that image ran alone
