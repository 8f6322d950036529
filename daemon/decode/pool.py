"""Decodes images in a few child processes, so a hanging or crashing decoder fails one file only."""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import datetime
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.decode.imaging import ImageError, decode_image
from daemon.decode.preprocess import PreprocessSpec, to_pixels
from daemon.delivery.fileops import sha256_bytes

logger = logging.getLogger(__name__)

JobFunction = Callable[["DecodeJob"], "DecodeOutcome"]

GONE_MISSING = "file disappeared from the inbox before it was classified"
GONE_CHANGED = "content changed after it was queued; the new content is a new image"

_START_TIMEOUT = 60.0  # a fresh interpreter importing Pillow and NumPy; generous for a busy box
_STOP_CHECK = 0.1  # how often a feeder waiting on its child looks at the stop flag
_EXIT_GRACE = 1.0  # an idle child asked to exit gets this long before it is killed
_READY = "ready"

# The child is a fresh interpreter, not a multiprocessing one: multiprocessing's spawn and
# forkserver both re-run the parent's main script in every child (measured), which for the
# `tigerwatch` entry point imports the CLI and its dependencies, and for any script that imports
# torch would load torch into every decoder. The parent sends its sys.path first so the child
# imports the same code.
_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "connection = Connection({fd})\n"
    "sys.path[:] = connection.recv()\n"
    "from daemon.decode.pool import serve_child\n"
    "serve_child(connection)\n"
)


@dataclass(frozen=True)
class DecodeJob:
    """One queued image to decode and preprocess; picklable."""

    path: str
    sha256: str  # hex digest recorded when the file was queued
    formats: tuple[str, ...]
    max_pixels: int
    draft_size: int | None
    spec: PreprocessSpec


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays has no single truth value
class DecodeOutcome:
    """What became of a DecodeJob: pixels, or `error` (counts as an attempt), or `gone`."""

    pixels: npt.NDArray[np.float32] | None = None  # (3, S, S) when decoded
    capture_time: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    error: str | None = None  # "<path>: <reason>"
    gone: str | None = None  # the queued content is no longer at its path
    decode_ms: float = 0.0


class DecoderPoolError(RuntimeError):
    """The pool itself failed (a decoder process could not start): no fault of the image."""


# --- the job, run in a decoder process ------------------------------------------------------------


def decode_job(job: DecodeJob) -> DecodeOutcome:
    """Read, verify, decode and preprocess one image. Never raises for bad input."""
    started = time.perf_counter()

    def outcome(**fields: Any) -> DecodeOutcome:
        return DecodeOutcome(decode_ms=(time.perf_counter() - started) * 1000, **fields)

    try:
        data = _read_no_follow(job.path)
    except FileNotFoundError:
        return outcome(gone=GONE_MISSING)
    except OSError as err:
        return outcome(error=f"{job.path}: cannot be read: {err.strerror or err}")
    if sha256_bytes(data) != job.sha256:
        return outcome(gone=GONE_CHANGED)
    try:
        decoded = decode_image(
            data,
            name=job.path,
            formats=job.formats,
            max_pixels=job.max_pixels,
            draft_size=job.draft_size,
        )
        pixels = to_pixels(decoded.image, job.spec)
    except ImageError as err:
        return outcome(error=str(err))
    except Exception as err:  # a decoder bug must fail this file only
        return outcome(error=f"{job.path}: unexpected decoder failure: {err!r}")
    metadata = decoded.metadata
    return outcome(
        pixels=pixels,
        capture_time=metadata.capture_time,
        camera_make=metadata.camera_make,
        camera_model=metadata.camera_model,
    )


def _read_no_follow(path: str) -> bytes:
    """Read a file's bytes without ever following a symlink put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def serve_child(connection: Connection) -> None:
    """A decoder process's main loop: job in, (outcome, log lines) out, until None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when decoding stops
    faulthandler.enable()  # a segfaulting decoder leaves its Python stack in the parent's log
    job_function: JobFunction = connection.recv()
    capture = _LogCapture()
    logging.getLogger().addHandler(capture)
    logging.getLogger().setLevel(logging.INFO)
    connection.send(_READY)
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


# --- the pool, in the daemon ----------------------------------------------------------------------


class DecoderPool:
    """Decodes DecodeJobs in `processes` child processes, each job bounded by `timeout` seconds.

    A job that runs too long has its process killed; a process that dies (a segfault in a C
    decoder, os._exit) is replaced. Either way only that job's future gets an error outcome and
    later jobs run normally. Futures raise DecoderPoolError when a process cannot be started and
    CancelledError when the pool closes first.
    """

    def __init__(
        self,
        processes: int,
        *,
        timeout: float,
        job_function: JobFunction = decode_job,
        start_timeout: float = _START_TIMEOUT,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._submit_lock = threading.Lock()
        launch = _Launch(job_function, start_timeout)
        children = _start_children(launch, processes)  # all or nothing: raises DecoderPoolError
        self._feeders = [
            _Feeder(self._jobs, self._stopping, launch, child, timeout) for child in children
        ]
        self._threads = [
            threading.Thread(target=feeder.run, name=f"decoder-feeder-{index}", daemon=True)
            for index, feeder in enumerate(self._feeders)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: DecodeJob) -> Future[DecodeOutcome]:
        future: Future[DecodeOutcome] = Future()
        with self._submit_lock:  # close() must not miss a job put in while it drains the queue
            if self._stopping.is_set():
                raise RuntimeError("decoder pool is closed")
            self._jobs.put(_Job(job, future))
        return future

    def close(self) -> None:
        """Cancel what has not finished and stop the processes (busy ones are killed at once)."""
        with self._submit_lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            _cancel_queued(self._jobs)
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=_EXIT_GRACE + 2 * _STOP_CHECK + 1.0)
            if thread.is_alive():
                logger.error("decoder feeder %s did not stop in time", thread.name)

    def __enter__(self) -> DecoderPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class _Job:
    job: DecodeJob
    future: Future[DecodeOutcome]


@dataclass(frozen=True)
class _Launch:
    """How to start a decoder process."""

    job_function: JobFunction
    start_timeout: float


@dataclass
class _Child:
    """One decoder process and the parent's end of its pipe."""

    process: subprocess.Popen[bytes]
    connection: Connection

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> str:
        """Kill the process (if still running), reap it and say how it ended."""
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.connection.close()
        return _exit_description(self.process.returncode)

    def reap(self) -> str:
        """After EOF on the pipe: wait briefly for the exit status, kill if it lingers."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=_EXIT_GRACE)
        return self.kill()

    def stop(self) -> None:
        """Ask an idle process to exit; kill it when it does not within the grace period."""
        try:
            self.connection.send(None)
            self.process.wait(timeout=_EXIT_GRACE)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _start_children(launch: _Launch, count: int) -> list[_Child]:
    """Start `count` processes side by side, then wait for each to say it is ready."""
    launched: list[_Child] = []
    try:
        for _ in range(count):
            launched.append(_launch_process(launch))
        return [_await_ready(child, launch.start_timeout) for child in launched]
    except DecoderPoolError:
        for child in launched:
            child.kill()
        raise


def _start_child(launch: _Launch) -> _Child:
    return _await_ready(_launch_process(launch), launch.start_timeout)


def _launch_process(launch: _Launch) -> _Child:
    parent_end, child_end = Pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, *_interpreter_flags(), "-c", _BOOTSTRAP.format(fd=child_end.fileno())],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # stderr stays: tracebacks and faulthandler output
        )
    except OSError as err:
        parent_end.close()
        raise DecoderPoolError(f"cannot start a decoder process: {err}") from err
    finally:
        child_end.close()
    child = _Child(process, parent_end)
    try:
        parent_end.send(list(sys.path))
        parent_end.send(launch.job_function)
    except OSError:
        pass  # it died at once: _await_ready reports how
    except Exception as err:  # pickling: a lambda or nested function
        child.kill()
        raise DecoderPoolError(f"job function cannot be sent to a process: {err!r}") from err
    return child


def _await_ready(child: _Child, timeout: float) -> _Child:
    try:
        if child.connection.poll(timeout) and child.connection.recv() == _READY:
            logger.debug("decoder process %d started", child.pid)
            return child
        reason = f"not ready after {timeout:g} s"
    except (EOFError, OSError):
        reason = "it exited"
    ending = child.kill()
    raise DecoderPoolError(f"decoder process {child.pid} failed to start: {reason} ({ending})")


def _interpreter_flags() -> list[str]:
    """The parent's -W, -X and -O options, as multiprocessing passes them to its children."""
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return flags


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _cancel_queued(jobs: queue.Queue[_Job | None]) -> None:
    while True:
        try:
            item = jobs.get_nowait()
        except queue.Empty:
            return
        if item is not None:
            item.future.cancel()


def _resolve(future: Future[DecodeOutcome], outcome: DecodeOutcome) -> None:
    with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody wants it
        future.set_result(outcome)


def _fail(future: Future[DecodeOutcome], error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)


class _Feeder:
    """Owns one decoder process: takes jobs from the shared queue and runs them there, one by one.

    Futures stay pending (never "running") until resolved, so close() can cancel every one
    that has no result yet.
    """

    def __init__(
        self,
        jobs: queue.Queue[_Job | None],
        stopping: threading.Event,
        launch: _Launch,
        child: _Child,
        timeout: float,
    ) -> None:
        self._jobs = jobs
        self._stopping = stopping
        self._launch = launch
        self._child: _Child | None = child
        self._timeout = timeout

    def run(self) -> None:
        try:
            while (item := self._jobs.get()) is not None:
                if not item.future.cancelled():
                    self._run_guarded(item)
        finally:
            self._stop_child()

    def _run_guarded(self, item: _Job) -> None:
        try:
            outcome = self._run(item.job)
        except DecoderPoolError as err:
            logger.error("%s", err)
            _fail(item.future, err)
        except Exception as err:  # a bug here must not leave the future unresolved forever
            logger.exception("decoder pool failure on %s", item.job.path)
            self._discard_child()
            _fail(item.future, err)
        else:
            if outcome is None:
                item.future.cancel()
            else:
                _resolve(item.future, outcome)

    def _run(self, job: DecodeJob) -> DecodeOutcome | None:
        """The job's outcome; None when the pool started closing meanwhile."""
        if self._stopping.is_set():
            return None
        started = time.monotonic()
        child = self._send(job)
        deadline = started + self._timeout
        while not child.connection.poll(min(_STOP_CHECK, max(deadline - time.monotonic(), 0))):
            if self._stopping.is_set():
                self._discard_child()
                return None
            if time.monotonic() >= deadline:
                return self._timed_out(job, started)
        try:
            outcome, lines = child.connection.recv()
        except (EOFError, OSError):
            return self._died(job, started, child)
        _replay(lines)
        result: DecodeOutcome = outcome
        return result

    def _send(self, job: DecodeJob) -> _Child:
        """Hand `job` to a live process; one that died while idle is replaced, not blamed."""
        for _ in range(2):
            child = self._live_child()
            try:
                child.connection.send(job)
                return child
            except OSError:
                self._discard_child()
        raise DecoderPoolError(f"{job.path}: decoder processes keep exiting before taking a job")

    def _live_child(self) -> _Child:
        if self._child is not None and not self._child.alive():
            ending = self._child.kill()
            logger.warning("decoder process %d had exited while idle (%s)", self._child.pid, ending)
            self._child = None
        if self._child is None:
            self._child = _start_child(self._launch)
        return self._child

    def _timed_out(self, job: DecodeJob, started: float) -> DecodeOutcome:
        error = f"{job.path}: decoding took longer than {self._timeout:g} s"
        pid = self._discard_child()
        logger.warning("%s; decoder process %d killed", error, pid)
        self._restart()
        return DecodeOutcome(error=error, decode_ms=_elapsed_ms(started))

    def _died(self, job: DecodeJob, started: float, child: _Child) -> DecodeOutcome:
        self._child = None
        pid, ending = child.pid, child.reap()
        error = f"{job.path}: the decoder process died ({ending})"
        logger.warning("%s; decoder process %d replaced", error, pid)
        self._restart()
        return DecodeOutcome(error=error, decode_ms=_elapsed_ms(started))

    def _restart(self) -> None:
        """Start the replacement now so the next job finds it ready; a failure waits for it."""
        if self._stopping.is_set():
            return
        try:
            self._live_child()
        except DecoderPoolError as err:
            logger.error("%s; trying again with the next image", err)

    def _discard_child(self) -> int | None:
        child, self._child = self._child, None
        if child is None:
            return None
        child.kill()
        return child.pid

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop()


def _replay(lines: list[LogLine]) -> None:
    """Log a child's records through the daemon's logging configuration."""
    for name, level, message in lines:
        logging.getLogger(name).log(level, "%s", message)


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000
