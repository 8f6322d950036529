"""Progress of long CLI work on stderr: a bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TextIO, TypeVar

T = TypeVar("T")

# Plain lines (a log file, cron, a pipe): one at each further tenth done, or after this long.
LINE_EVERY_SECONDS = 5.0
LINE_EVERY_FRACTION = 0.1


class Track(Protocol):
    """What long loops accept: wrap the items, get them back one by one as progress is shown."""

    def __call__(
        self, items: Iterable[T], what: str, total: int, unit: str = "files"
    ) -> Iterator[T]: ...


def untracked(items: Iterable[T], what: str, total: int, unit: str = "files") -> Iterator[T]:
    """The library's default: no output (the daemon, tests, callers that show nothing)."""
    return iter(items)


def track(
    items: Iterable[T],
    what: str,
    total: int,
    unit: str = "files",
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield `items` while showing progress on the current stderr (stdout carries results)."""
    stream = sys.stderr
    if total <= 0:
        return iter(items)
    if stream.isatty():
        return _bar(items, what, total, unit, stream)
    return _lines(items, PlainProgress(what, total, unit, stream, clock))


def _bar(items: Iterable[T], what: str, total: int, unit: str, stream: TextIO) -> Iterator[T]:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    columns, lines = _size(stream)
    # Log records meanwhile go above the bar instead of through it.
    with (
        logging_redirect_tqdm(),
        tqdm(
            items,
            desc=what,
            total=total,
            unit=unit.removesuffix("s"),
            file=stream,
            ncols=columns,
            nrows=lines,
        ) as bar,
    ):
        yield from bar


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's size; 80x24 where it reports none (a serial console), on which tqdm
    would draw nothing at all."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def _lines(items: Iterable[T], progress: PlainProgress) -> Iterator[T]:
    for item in items:
        yield item
        progress.step()
    progress.finish()


class PlainProgress:
    """`what: done/total unit (pct), rate, time left` lines, written as the thresholds pass."""

    def __init__(
        self, what: str, total: int, unit: str, stream: TextIO, clock: Callable[[], float]
    ) -> None:
        self._what, self._total, self._unit = what, total, unit
        self._stream, self._clock = stream, clock
        self._started = self._last_time = clock()
        self._done = self._last_done = 0

    def step(self, count: int = 1) -> None:
        self._done += count
        now = self._clock()
        tenth = max(1, round(self._total * LINE_EVERY_FRACTION))
        if self._done - self._last_done >= tenth or now - self._last_time >= LINE_EVERY_SECONDS:
            self._write(now)

    def finish(self) -> None:
        if self._done != self._last_done:
            self._write(self._clock())

    def _write(self, now: float) -> None:
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self._what}: {self._done}/{self._total} {self._unit} "
            f"({100 * self._done / self._total:.0f}%), {rate:.1f} {self._unit}/s"
        )
        if self._done >= self._total:
            line += f", done in {elapsed:.0f} s"
        elif rate > 0:
            line += f", about {(self._total - self._done) / rate:.0f} s left"
        print(line, file=self._stream, flush=True)
        self._last_time, self._last_done = now, self._done
