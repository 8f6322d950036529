"""Meters for the daemon's processes: peak resident memory and CPU time of the process tree."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from bench.harness import usable_cores

RSS_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class BurstCpu:
    """Where the CPU went between the first drop and the last file done."""

    daemon_seconds: float  # the daemon process: model, intake, routing, database
    decoder_seconds: float  # its decoder processes
    idle_fraction: float  # of the whole machine's CPU over the burst

    def per_image_ms(self, images: int) -> float:
        return 1000 * (self.daemon_seconds + self.decoder_seconds) / images


class RssSampler:
    """Polls the resident memory of a process and its children; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        members = [self._process, *self._process.children(recursive=True)]
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(RSS_POLL_SECONDS):
            with contextlib.suppress(psutil.Error):
                self.peak_bytes = max(self.peak_bytes, self._sample())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def child_processes(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return list(psutil.Process(pid).children(recursive=True))
    return []


def vm_hwm_bytes(pid: int) -> int | None:
    """The kernel's exact peak resident size of one process (not its children)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


REAPED = -1  # key for the CPU of children that have already exited


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and each of its children, by pid."""
    seconds: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for member in [root, *child_processes(pid)]:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                seconds[member.pid] = times.user + times.system
        # Decoders that ended (timed out, crashed, replaced) and were reaped count here.
        reaped = root.cpu_times()
        seconds[REAPED] = reaped.children_user + reaped.children_system
    return seconds


class BurstCpuMeter:
    """CPU of the daemon and its decoders, and the machine's idle share, between two points.

    The idle share also counts this benchmark's own polling as busy; it is small.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._tree = tree_cpu_seconds(pid)
        self._idle = psutil.cpu_times().idle
        self._wall = time.monotonic()

    def stop(self) -> BurstCpu:
        tree = tree_cpu_seconds(self._pid)
        idle = psutil.cpu_times().idle - self._idle
        wall = time.monotonic() - self._wall
        used = {pid: seconds - self._tree.get(pid, 0.0) for pid, seconds in tree.items()}
        daemon = used.pop(self._pid, 0.0)
        return BurstCpu(daemon, sum(used.values()), idle / (wall * usable_cores()))
