"""A decoded-pixel budget shared by the decoder processes, so side-by-side decodes fit in memory."""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from daemon.decode.header import ImageHeader, read_header
from daemon.hashing import open_regular_file

_DRAFT_SCALES = (8, 4, 2, 1)  # libjpeg's scales, largest first, as Pillow's JPEG draft picks them
_WAIT_SLICE = 0.1  # how often a waiting job looks at the stop flag
_BYTES_PER_PIXEL = 4  # the budget's unit, rounded: a plain RGB pixel at the decoder's peak


def decoded_pixels(
    path: str, *, formats: Sequence[str], draft_size: int | None, max_pixels: int, unknown: int
) -> int:
    """Pixels a decoder will hold for `path`, from its header alone; `unknown` when unreadable.

    Counted in plain-RGB pixels (about 4.3 bytes each at the decoder's peak): a format that
    needs more memory per pixel counts its header's weight times over, and the file's own bytes,
    which the decoder holds too, count one pixel per 4 bytes. A JPEG decoded with a draft size
    is counted at the reduced scale libjpeg will use; an image over `max_pixels` counts only
    its bytes, since the decoder refuses it from the same header.
    """
    try:
        with open_regular_file(Path(path)) as stream:
            header = read_header(stream)
            file_pixels = os.fstat(stream.fileno()).st_size // _BYTES_PER_PIXEL
    except OSError:
        return 0  # the decoder reports the error without holding any pixels
    if header is None:
        return unknown
    return file_pixels + _image_pixels(header, formats, draft_size, max_pixels)


def _image_pixels(
    header: ImageHeader, formats: Sequence[str], draft_size: int | None, max_pixels: int
) -> int:
    width, height = header.width, header.height
    if width * height > max_pixels:
        return 0
    if header.format == "JPEG" and draft_size and {"JPEG", "MPO"} & set(formats):
        scale = min(width // draft_size, height // draft_size)
        step = next(s for s in _DRAFT_SCALES if scale >= s or s == 1)
        width, height = (width + step - 1) // step, (height + step - 1) // step
    return width * height * header.weight


class PixelBudget:
    """Admits jobs first come, first served while the pixels in flight stay within `limit`.

    A job larger than the whole budget is admitted once nothing else is in flight, so no image
    within `images.max_pixels` ever waits for good; later jobs wait behind it (no overtaking), so
    a large image is not starved by a stream of small ones. Thread-safe.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"pixel budget must be at least 1, got {limit}")
        self._limit = limit
        self._in_flight = 0
        self._running = 0
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    @property
    def limit(self) -> int:
        return self._limit

    def in_flight(self) -> int:
        with self._changed:
            return self._in_flight

    def acquire(self, pixels: int, stop: threading.Event) -> bool:
        """Wait until `pixels` may be decoded; False when `stop` was set first (nothing held)."""
        with self._changed:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                while not self._admissible(ticket, pixels):
                    if stop.is_set():
                        return False
                    self._changed.wait(_WAIT_SLICE)
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()  # the next in line may fit now
            self._in_flight += pixels
            self._running += 1
            return True

    def release(self, pixels: int) -> None:
        with self._changed:
            self._in_flight -= pixels
            self._running -= 1
            self._changed.notify_all()

    def _admissible(self, ticket: int, pixels: int) -> bool:
        if self._queue[0] != ticket:
            return False
        return self._running == 0 or self._in_flight + pixels <= self._limit
