"""Shared harness of the benchmark: the machine it ran on, CPU accounting, rates, JSON results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import PIL
import psutil  # type: ignore[import-untyped]
import torch
import transformers

REPO_ROOT = Path(__file__).resolve().parents[1]


MIB = 1024 * 1024


class BenchmarkError(Exception):
    """A measurement could not be made; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Rate:
    images: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# The instruction sets that decide whether bf16 or int8 pay off (see README "Throughput").
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of SPEED_FLAGS this CPU reports in /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in SPEED_FLAGS if flag in present]
    return []


def machine_header() -> list[str]:
    threads_env = {
        name: os.environ.get(name, "unset") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    return [
        f"machine: {cpu_model()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.machine()}",
        f"cpu flags: {' '.join(cpu_flags()) or 'none of ' + ', '.join(SPEED_FLAGS)}",
        f"software: Python {platform.python_version()}, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"transformers {transformers.__version__}, Pillow {PIL.__version__}",
        f"threads: torch intra-op {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}, "
        + ", ".join(f"{name}={value}" for name, value in threads_env.items()),
    ]


class CpuAccount:
    """CPU time spent on this machine by processes other than this benchmark and its children.

    The figures here are only as good as the machine is quiet; this says how quiet it was.
    """

    def __init__(self) -> None:
        self._system = psutil.cpu_times()
        self._own = os.times()
        self._wall = time.monotonic()

    def report(self) -> str:
        system, own = psutil.cpu_times(), os.times()
        busy = sum(
            getattr(system, name) - getattr(self._system, name)
            for name in ("user", "nice", "system", "irq", "softirq")
        )
        mine = sum(own[:4]) - sum(self._own[:4])  # user, system, children's user and system
        wall = time.monotonic() - self._wall
        steal = system.steal - self._system.steal
        others = max(0.0, busy - mine)
        return (
            f"CPU time during the run: this benchmark and the daemon {mine:.0f} s, other "
            f"processes {others:.0f} s ({others / wall:.2f} cores on average), hypervisor "
            f"steal {steal:.0f} s, over {wall:.0f} s wall"
        )


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average before the run: {one:.2f} {five:.2f} {fifteen:.2f}"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


# --- the result file ---------------------------------------------------------------------------


def as_json(value: object) -> object:
    """Plain JSON values from the benchmark's records: dataclasses, paths, tuples, numbers."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            field.name: as_json(getattr(value, field.name)) for field in dataclasses.fields(value)
        }
        if isinstance(value, Rate):
            fields["per_second"] = as_json(value.per_second)
        return fields
    if isinstance(value, Mapping):
        return {str(key): as_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def write_json(path: Path, record: Mapping[str, object]) -> None:
    """The run's figures, written under a temporary name and renamed: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(as_json(record), indent=2) + "\n", encoding="utf-8")
    partial.rename(path)
