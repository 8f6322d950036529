"""Decoder stand-ins for the speculation review; they run inside the decoder processes."""

from __future__ import annotations

import time

from daemon.decode.jobs import DecodeJob, DecodeOutcome, decode_job


def slow_row_decode(job: DecodeJob) -> DecodeOutcome:
    """The real decoder; a row's decode (one with a digest) starts a second late, so that
    whatever the routing does meanwhile is done before the file is read."""
    if job.sha256 is not None:
        time.sleep(1.0)
    return decode_job(job)
