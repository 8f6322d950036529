"""The decoder process's half of the pool: serve decode jobs over a pipe until told to stop."""

from __future__ import annotations

import faulthandler
import logging
import pickle
import signal
from multiprocessing.connection import Connection

from daemon.decode.jobs import DecodeJob, DecodeOutcome, JobFunction
from daemon.malloc import limit_malloc_arenas

READY = "ready"


def serve_child(connection: Connection) -> None:
    """A decoder process's main loop: job in, (outcome, log lines) out, until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when decoding stops
    faulthandler.enable()  # a segfaulting decoder leaves its Python stack in the parent's log
    limit_malloc_arenas()
    job_function: JobFunction = connection.recv()
    capture = _LogCapture()
    logging.getLogger().addHandler(capture)
    logging.getLogger().setLevel(logging.INFO)
    connection.send(READY)
    while True:
        try:
            job = connection.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        outcome = _guarded(job_function, job)
        _send_outcome(connection, job, outcome, capture.take())


LogLine = tuple[str, int, str]  # logger name, level, message


class _LogCapture(logging.Handler):
    """Keeps a job's log records so the parent logs them through its own configuration."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lines: list[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append((record.name, record.levelno, record.getMessage()))

    def take(self) -> list[LogLine]:
        lines, self._lines = self._lines, []
        return lines


def _guarded(job_function: JobFunction, job: DecodeJob) -> DecodeOutcome:
    try:
        return job_function(job)
    except Exception as err:
        return DecodeOutcome(error=f"{job.path}: unexpected decoder failure: {err!r}")


def _send_outcome(
    connection: Connection, job: DecodeJob, outcome: DecodeOutcome, lines: list[LogLine]
) -> None:
    try:
        connection.send((outcome, lines))
    except (pickle.PicklingError, TypeError, AttributeError, ValueError) as err:
        failure = DecodeOutcome(error=f"{job.path}: decoder result not transferable: {err!r}")
        connection.send((failure, lines))
