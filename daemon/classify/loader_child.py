"""The loader child's side: a fresh interpreter reads a checkpoint with transformers, replies."""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection

from daemon.classify.errors import ModelLoadError

# Messages to the parent: ("log", (logger name, level, message)) any number of times, then one
# of ("parts", CheckpointParts), ("error", ModelLoadError's message), ("failed", what raised).
LOG, PARTS, ERROR, FAILED = "log", "parts", "error", "failed"


def serve(connection: Connection) -> None:
    """Read the request (model name or folder, prompts), load, send the outcome, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when loading stops
    name_or_path, prompts = connection.recv()
    forward = _LogForward(connection)
    daemon_logger = logging.getLogger("daemon")
    daemon_logger.addHandler(forward)
    daemon_logger.setLevel(logging.INFO)
    # Only this process imports transformers (through loading.py).
    from daemon.classify.loading import load_parts

    try:
        reply: tuple[str, object] = (PARTS, load_parts(name_or_path, prompts))
    except ModelLoadError as err:
        reply = (ERROR, str(err))
    except Exception as err:  # a bug or a checkpoint nobody foresaw: the parent names it
        reply = (FAILED, f"{type(err).__name__}: {err}")
    daemon_logger.removeHandler(forward)
    connection.send(reply)


class _LogForward(logging.Handler):
    """Sends the daemon's own log records to the parent as they happen (a hub download is
    logged before it starts, not after), so they reach the daemon's log configuration."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(logging.INFO)
        self._connection = connection

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock here: one record at a time goes down the pipe.
        self._connection.send((LOG, (record.name, record.levelno, record.getMessage())))
