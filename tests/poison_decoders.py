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
