"""The loader child's side: a fresh interpreter reads a checkpoint with transformers, replies."""

from __future__ import annotations

import logging
import signal
from multiprocessing.connection import Connection

from daemon.child_interpreter import LogForward
from daemon.classify.errors import ModelLoadError

# Messages to the parent: log records any number of times (child_interpreter.LogForward), then
# one of ("parts", CheckpointParts), ("error", ModelLoadError's message), ("failed", what raised).
PARTS, ERROR, FAILED = "parts", "error", "failed"


def serve(connection: Connection) -> None:
    """Read the request (model name or folder, prompts), load, send the outcome, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when loading stops
    name_or_path, prompts = connection.recv()
    forward = LogForward(connection)
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
