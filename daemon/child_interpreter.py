"""Fresh Python children serving one function over a pipe: their command line, the parent's wait.

A fresh interpreter, not a multiprocessing one: multiprocessing's spawn and forkserver both re-run
the parent's main script in every child (measured), which for the `tigerwatch` entry point imports
the CLI and its dependencies, and for any script that imports torch would load torch into every
decoder. The parent sends its sys.path first, so the child imports the same code. `-P` keeps the
current directory off the path the bootstrap's own imports use: a multiprocessing.py there would
be imported instead of the standard one, and every child would die at start.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2  # how often a wait for a child looks whether a stop was asked for
# A child still working after this long is said in the log, and again every such period: a
# child stuck on a hung mount would otherwise leave an empty log.
STILL_WORKING_SECONDS = 60.0

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
