"""Reads a checkpoint in a short-lived child interpreter, so the daemon never imports transformers.

transformers 5 brings sympy, scipy, torch._dynamo and more into any process that imports its
CLIP classes: about 125 MB the daemon would keep for as long as it runs, for nothing it uses
after loading. The child imports it, embeds the prompts with the text tower, reads the image
processor and the vision config (loading.py), sends back a CheckpointParts and exits.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
import threading
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import IO, Any

from daemon.child_interpreter import ChildWait, child_command
from daemon.classify.checkpoint import CheckpointParts, all_prompts
from daemon.classify.errors import ModelLoadError
from daemon.classify.loader_child import ERROR, FAILED, LOG, PARTS
from daemon.config import Config

STDERR_TAIL_CHARS = 600  # of a child that died, quoted in the error
_EXIT_GRACE = 2.0  # a child that replied or died gets this long to exit before it is killed

# A fresh interpreter: see daemon/child_interpreter.py.

logger = logging.getLogger(__name__)

# prefetch_for_config's outcome, by (model, prompts), until load_checkpoint takes it.
_prefetched: dict[tuple[str, tuple[str, ...]], CheckpointParts | ModelLoadError] = {}


def prefetch_for_config(config: Config, stop: threading.Event | None = None) -> None:
    """Read the configured checkpoint now, keeping the outcome (parts or error) for the next
    load_checkpoint of the same model and prompts.

    `tigerwatch run` calls it before it imports torch: the child's peak (torch, transformers
    and the text tower's weights, about 630 MB for ViT-B/32) then comes on top of a process of
    tens of MB rather than on top of a daemon with torch loaded (another 270 MB).

    `stop` set while the child works (SIGTERM during start-up) ends the wait: the child is
    killed and nothing is kept."""
    key = (config.model.name_or_path, all_prompts(config.labels))
    try:
        _prefetched[key] = _load_in_child(*key, stop=stop)
    except ModelLoadError as err:
        if stop is None or not stop.is_set():
            _prefetched[key] = err


def load_checkpoint(name_or_path: str, prompts: tuple[str, ...]) -> CheckpointParts:
    """The checkpoint's parts, prefetched or read by a child now; the child's ModelLoadError is
    raised here with the same message."""
    prefetched = _prefetched.pop((name_or_path, prompts), None)
    if isinstance(prefetched, ModelLoadError):
        raise prefetched
    return _load_in_child(name_or_path, prompts) if prefetched is None else prefetched


def _load_in_child(
    name_or_path: str, prompts: tuple[str, ...], stop: threading.Event | None = None
) -> CheckpointParts:
    """The checkpoint's parts as a child read them; a child that dies is a ModelLoadError that
    says so.

    The child's stdout and stderr go to a temporary file, not to the daemon's log: transformers
    may print warnings or progress bars there. Only the file's tail of a dead child is shown.
    """
    with tempfile.TemporaryFile() as output:
        process, connection = _start(name_or_path, output)
        try:
            connection.send(list(sys.path))
            connection.send((name_or_path, prompts))
            wait = ChildWait(f"reading CLIP model {name_or_path}", process.pid, stop)
            reply = _reply(connection, wait)
        finally:
            connection.close()
            ending = _ended(process)
        if reply is None:
            raise ModelLoadError(
                f"Cannot load CLIP model {name_or_path!r}: the process loading it ended "
                f"without an answer ({ending}){_tail(output)}"
            )
    return _outcome(name_or_path, *reply)


def _start(name_or_path: str, output: IO[bytes]) -> tuple[subprocess.Popen[bytes], Connection]:
    parent_end, child_end = Pipe()
    try:
        process = subprocess.Popen(
            child_command("daemon.classify.loader_child", "serve", child_end.fileno()),
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    except OSError as err:
        parent_end.close()
        raise ModelLoadError(
            f"Cannot load CLIP model {name_or_path!r}: cannot start a process to load it: {err}"
        ) from err
    finally:
        child_end.close()
    return process, parent_end


def _reply(connection: Connection, wait: ChildWait | None = None) -> tuple[str, Any] | None:
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


def _outcome(name_or_path: str, kind: str, body: Any) -> CheckpointParts:
    if kind == PARTS and isinstance(body, CheckpointParts):
        return body
    if kind == ERROR:
        raise ModelLoadError(str(body))
    what = body if kind == FAILED else f"an unexpected answer {kind!r}"
    raise ModelLoadError(f"Cannot load CLIP model {name_or_path!r}: loading failed: {what}")


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
    return f": {text[-STDERR_TAIL_CHARS:]}" if text else ""
