"""Tests for daemon.decode.budget: the admission logic of the shared decoded-pixel budget."""

from __future__ import annotations

import io
import threading
from pathlib import Path

from PIL import Image

from daemon.decode.budget import PixelBudget, decoded_pixels
from tests.faults.fault_kit import noise_jpeg

FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
SETTLE = 0.3  # how long a waiter gets to (wrongly) slip through; never a pass condition


class Waiter(threading.Thread):
    """Asks the budget for `pixels` on its own thread; `admitted` is set once it may decode."""

    def __init__(self, budget: PixelBudget, pixels: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.budget, self.pixels, self.stop = budget, pixels, stop
        self.admitted = threading.Event()
        self.result: bool | None = None

    def run(self) -> None:
        self.result = self.budget.acquire(self.pixels, self.stop)
        if self.result:
            self.admitted.set()


def _started(budget: PixelBudget, pixels: int, stop: threading.Event) -> Waiter:
    waiter = Waiter(budget, pixels, stop)
    waiter.start()
    return waiter


def test_jobs_that_fit_together_are_admitted_together() -> None:
    budget, stop = PixelBudget(100), threading.Event()
    assert budget.acquire(40, stop)
    assert budget.acquire(60, stop)
    assert budget.in_flight() == 100


def test_a_job_that_does_not_fit_waits_until_pixels_are_released() -> None:
    budget, stop = PixelBudget(100), threading.Event()
    assert budget.acquire(60, stop)
    waiter = _started(budget, 60, stop)
    assert not waiter.admitted.wait(SETTLE)
    budget.release(60)
    assert waiter.admitted.wait(10)
    assert budget.in_flight() == 60


def test_a_job_over_the_whole_budget_runs_alone_and_is_not_starved() -> None:
    budget, stop = PixelBudget(100), threading.Event()
    assert budget.acquire(10, stop)
    big = _started(budget, 500, stop)
    assert not big.admitted.wait(SETTLE)
    small = _started(budget, 10, stop)  # would fit beside the first, but arrived after the big one
    assert not small.admitted.wait(SETTLE)
    budget.release(10)
    assert big.admitted.wait(10)
    assert not small.admitted.wait(SETTLE)  # nothing runs beside an over-budget job
    budget.release(500)
    assert small.admitted.wait(10)


def test_a_waiting_job_gives_up_when_the_pool_stops() -> None:
    budget, stop = PixelBudget(100), threading.Event()
    assert budget.acquire(100, stop)
    waiter = _started(budget, 50, stop)
    stop.set()
    waiter.join(10)
    assert waiter.result is False
    assert budget.in_flight() == 100  # the one that gave up holds nothing


def _write(path: Path, image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    path.write_bytes(buffer.getvalue())
    return str(path)


def test_pixels_are_counted_from_the_header_at_the_scale_they_are_decoded(tmp_path: Path) -> None:
    jpeg = tmp_path / "frame.jpg"
    jpeg.write_bytes(noise_jpeg(1, size=(4000, 3000)))
    png = _write(tmp_path / "frame.png", Image.new("RGB", (4000, 3000)), "PNG")
    rgba = _write(tmp_path / "alpha.png", Image.new("RGBA", (1000, 1000)), "PNG")
    webp = _write(tmp_path / "frame.webp", Image.new("RGB", (1000, 1000)), "WEBP")

    def count(path: str, draft: int | None, max_pixels: int = 10**9) -> int:
        held = decoded_pixels(
            path, formats=FORMATS, draft_size=draft, max_pixels=max_pixels, unknown=-1
        )
        # The file's own bytes, held by the decoder too, count one pixel per 4 bytes.
        return held - Path(path).stat().st_size // 4 if held > 0 else held

    assert count(str(jpeg), None) == 12_000_000
    assert count(str(jpeg), 224) == 500 * 375  # libjpeg's 1/8 scale
    assert count(png, 224) == 12_000_000  # no reduced decoding for PNG
    assert count(png, 224, max_pixels=1_000_000) == 0  # refused from its header, never decoded
    assert count(rgba, 224) == 3 * 1_000_000  # wider modes cost more memory per pixel
    assert count(webp, 224) == 4 * 1_000_000
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert count(str(tmp_path / "junk.jpg"), 224) == -1
    assert count(str(tmp_path / "missing.jpg"), 224) == 0
