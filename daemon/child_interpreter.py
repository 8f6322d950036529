"""Fresh Python children serving one function over a pipe: starting one, and talking to it.

A fresh interpreter, not a multiprocessing one: multiprocessing's spawn and forkserver both re-run
the parent's main script in every child (measured), which for the `tigerwatch` entry point imports
the CLI and its dependencies, and for any script that imports torch would load torch into every
decoder. The parent sends its sys.path first, so the child imports the same code. `-P` keeps the
current directory off the path the bootstrap's own imports use: a multiprocessing.py there would
be imported instead of the standard one, and every child would die at start.

A child that serves one request (the model loader, the start-up migration) sends its log records
as ("log", (logger name, level, message)) while it works, then one reply (kind, body); the parent
logs the records as its own (`run_child`). The child's stdout and stderr go to a temporary file,
never to the daemon's log; only its end is quoted, for a child that died without a reply.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import IO, Any

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a wait for a child looks whether a stop was asked for
# A child still working after this long is said in the log, and again every such period: a
# child stuck on a hung mount would otherwise leave an empty log.
STILL_WORKING_SECONDS = 60.0
OUTPUT_TAIL_CHARS = 600  # of a child that died, quoted in the error
_EXIT_GRACE = 2.0  # a child that replied or died gets this long to exit before it is killed
LOG = "log"  # the kind of a message that carries one of the child's log records

_BOOTSTRAP = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "connection = Connection({fd})\n"
    "sys.path[:] = connection.recv()\n"
    "from {module} import {function}\n"
    "{function}(connection)\n"
)


def child_command(module: str, function: str, fd: int) -> list[str]:
    """`python ... -c BOOTSTRAP`: the child calls module.function(connection) on pipe end `fd`,
    after taking its sys.path from the first message; the parent's -W, -X and -O options are
    passed on, as multiprocessing passes them to its children."""
    flags: list[str] = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    bootstrap = _BOOTSTRAP.format(fd=fd, module=module, function=function)
    return [sys.executable, *flags, "-P", "-c", bootstrap]


class ChildWait:
    """A parent's wait for its child: logged when it starts and every STILL_WORKING_SECONDS
    while it lasts ("still <doing> after N s"), ended early by `stop` where one is given."""

    def __init__(self, doing: str, pid: int, stop: threading.Event | None = None) -> None:
        self.doing, self.pid, self.stop = doing, pid, stop
        self.started = self.said = time.monotonic()
        logger.info("%s in a child process (pid %d)", doing, pid)

    def readable(self, connection: Connection) -> bool:
        """Wait for the child's next message; False when a stop is asked for first. The stop
        is looked at before every poll, so a child that keeps sending cannot hold it off."""
        while not self._stopped():
            if connection.poll(POLL_SECONDS):
                return True
        return False

    def _stopped(self) -> bool:
        now = time.monotonic()
        if now - self.said >= STILL_WORKING_SECONDS:
            self.said = now
            logger.warning(
                "still %s after %.0f s (child process %d)", self.doing, now - self.started, self.pid
            )
        return self.stop is not None and self.stop.is_set()


@dataclass(frozen=True)
class ChildRun:
    """How a one-request child went: its reply (None when it died or a stop came first), how
    it ended ("exit code 0", "killed by signal 9"), and the end of its output when it gave no
    reply (": <text>", or "")."""

    reply: tuple[str, Any] | None
    ending: str
    output_tail: str


def run_child(
    module: str, function: str, request: object, *, doing: str, stop: threading.Event | None
) -> ChildRun:
    """Start module.function in a fresh child, send it `request`, log its records as they come
    and wait for its reply (`ChildWait`: logged, ended early by `stop`); the child is then
    waited for, and killed if it lingers. OSError when it cannot be started."""
    with tempfile.TemporaryFile() as output:
        process, connection = _start(module, function, output)
        try:
            connection.send(list(sys.path))
            connection.send(request)
            reply = relay_until_reply(connection, ChildWait(doing, process.pid, stop))
        finally:
            connection.close()
            ending = _ended(process)
        return ChildRun(reply, ending, "" if reply is not None else _tail(output))


def relay_until_reply(
    connection: Connection, wait: ChildWait | None = None
) -> tuple[str, Any] | None:
    """The child's final message, its log records logged here on the way; None when it died
    or a stop was asked for first."""
    try:
        while True:
            if wait is not None and not wait.readable(connection):
                return None
            kind, body = connection.recv()
            if kind != LOG:
                return kind, body
            name, level, message = body
            logging.getLogger(name).log(level, "%s", message)
    except (EOFError, OSError):
        return None


class LogForward(logging.Handler):
    """The child's side: sends log records to the parent as they happen (a download or a
    backup is logged before it starts, not after), so they reach the daemon's log with its
    format and level. `outlive_parent`: a parent gone meanwhile (SIGKILL, the OOM killer) drops
    the records instead of ending the child's work with a broken pipe."""

    def __init__(self, connection: Connection, *, outlive_parent: bool = False) -> None:
        super().__init__(logging.INFO)
        self._connection = connection
        self._outlive_parent = outlive_parent

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock here: one record at a time goes down the pipe.
        message = (LOG, (record.name, record.levelno, record.getMessage()))
        if not self._outlive_parent:
            self._connection.send(message)
            return
        with contextlib.suppress(OSError):
            self._connection.send(message)


def _start(
    module: str, function: str, output: IO[bytes]
) -> tuple[subprocess.Popen[bytes], Connection]:
    parent_end, child_end = Pipe()
    try:
        process = subprocess.Popen(
            child_command(module, function, child_end.fileno()),
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    except OSError:
        parent_end.close()
        raise
    finally:
        child_end.close()
    return process, parent_end


def _ended(process: subprocess.Popen[bytes]) -> str:
    """Wait for the child (killed if it lingers, or if the parent gave up on it) and say how
    it ended."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_EXIT_GRACE)
    if process.poll() is None:
        process.kill()
        process.wait()
    code = process.returncode
    return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"


def _tail(output: IO[bytes]) -> str:
    output.seek(0)
    text = output.read().decode(errors="replace").strip()
    return f": {text[-OUTPUT_TAIL_CHARS:]}" if text else ""
