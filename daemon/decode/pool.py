"""The daemon's half of the decoder pool: child processes, so a bad file fails that file only."""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import TracebackType

from daemon.child_interpreter import child_command
from daemon.decode.budget import PixelBudget, decoded_pixels
from daemon.decode.child import READY, LogLine
from daemon.decode.jobs import DecodeJob, DecodeOutcome, JobFunction, decode_job

logger = logging.getLogger(__name__)

_START_TIMEOUT = 60.0  # a fresh interpreter importing Pillow and NumPy; generous for a busy box
_STOP_CHECK = 0.1  # how often a feeder waiting on its child looks at the stop flag
_EXIT_GRACE = 1.0  # an idle child asked to exit gets this long before it is killed

# The child is a fresh interpreter: see daemon/child_interpreter.py.


class DecoderPoolError(RuntimeError):
    """The pool itself failed (a decoder process could not start): no fault of the image."""


# --- the pool, in the daemon ----------------------------------------------------------------------


class DecoderPool:
    """Decodes DecodeJobs in `processes` child processes, each job bounded by `timeout` seconds.

    A job that runs too long has its process killed; a process that dies (a segfault in a C
    decoder, os._exit) is replaced. Either way only that job's future gets an error outcome and
    later jobs run normally. Futures raise DecoderPoolError when a process cannot be started and
    CancelledError when the pool closes first. With `pixel_budget`, a job starts only while the
    decoded pixels of all running jobs (read from each file's header) stay within it, or alone.
    """

    def __init__(
        self,
        processes: int,
        *,
        timeout: float,
        job_function: JobFunction = decode_job,
        start_timeout: float = _START_TIMEOUT,
        pixel_budget: int | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._submit_lock = threading.Lock()
        budget = None if pixel_budget is None else PixelBudget(pixel_budget)
        launch = _Launch(job_function, start_timeout, budget)
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
    budget: PixelBudget | None = None  # shared by every feeder of the pool


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
            child_command("daemon.decode.child", "serve_child", child_end.fileno()),
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
        if child.connection.poll(timeout) and child.connection.recv() == READY:
            logger.debug("decoder process %d started", child.pid)
            return child
        reason = f"not ready after {timeout:g} s"
    except (EOFError, OSError):
        reason = "it exited"
    ending = child.kill()
    raise DecoderPoolError(f"decoder process {child.pid} failed to start: {reason} ({ending})")


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
        budget = self._launch.budget
        if budget is None:
            return self._decode(job)
        pixels = decoded_pixels(
            job.path,
            formats=job.formats,
            draft_size=job.draft_size,
            max_pixels=job.max_pixels,
            unknown=budget.limit,  # a header we cannot read: decode it alone, to be safe
        )
        if not budget.acquire(pixels, self._stopping):
            return None
        try:
            return self._decode(job)
        finally:
            budget.release(pixels)

    def _decode(self, job: DecodeJob) -> DecodeOutcome | None:
        """Run `job` in this feeder's process, within the time limit."""
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
