"""Decoder stand-ins for poison-image tests; they run inside the decoder processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from daemon.decode.jobs import DecodeJob, DecodeOutcome, decode_job


def poisoned_decode(job: DecodeJob) -> DecodeOutcome:
    """Like the real decoder, except that "hang*" files never finish and "crash*" files
    kill the decoder process the way a C decoder bug would."""
    name = Path(job.path).name
    if name.startswith("hang"):
        time.sleep(3600)
    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_job(job)


def logged_decode(job: DecodeJob) -> DecodeOutcome:
    """The real decoder, noting when each job ran and the process's peak RSS in `decodes.log`
    beside the image (CLOCK_MONOTONIC is one clock for every process on the machine)."""
    started = time.monotonic_ns()
    outcome = decode_job(job)
    peak_kib = _peak_rss_kib()
    line = f"{Path(job.path).name}\t{os.getpid()}\t{started}\t{time.monotonic_ns()}\t{peak_kib}\n"
    fd = os.open(Path(job.path).parent / "decodes.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write per line: O_APPEND keeps lines whole
    finally:
        os.close(fd)
    return outcome


def _peak_rss_kib() -> int:
    """VmHWM: this process's own peak (ru_maxrss would include the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
