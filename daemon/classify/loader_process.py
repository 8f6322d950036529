"""Reads a checkpoint in a short-lived child interpreter, so the daemon never imports transformers.

transformers 5 brings sympy, scipy, torch._dynamo and more into any process that imports its
CLIP classes: about 125 MB the daemon would keep for as long as it runs, for nothing it uses
after loading. The child imports it, embeds the prompts with the text tower, reads the image
processor and the vision config (loading.py), sends back a CheckpointParts and exits.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from daemon.child_interpreter import run_child
from daemon.classify.checkpoint import CheckpointParts, all_prompts
from daemon.classify.errors import ModelLoadError
from daemon.classify.loader_child import ERROR, FAILED, PARTS
from daemon.config import Config

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
    says so. Its output (transformers' warnings, progress bars) never reaches the daemon's log."""
    try:
        run = run_child(
            "daemon.classify.loader_child",
            "serve",
            (name_or_path, prompts),
            doing=f"reading CLIP model {name_or_path}",
            stop=stop,
        )
    except OSError as err:
        raise ModelLoadError(
            f"Cannot load CLIP model {name_or_path!r}: cannot start a process to load it: {err}"
        ) from err
    if run.reply is None:
        raise ModelLoadError(
            f"Cannot load CLIP model {name_or_path!r}: the process loading it ended "
            f"without an answer ({run.ending}){run.output_tail}"
        )
    return _outcome(name_or_path, *run.reply)


def _outcome(name_or_path: str, kind: str, body: Any) -> CheckpointParts:
    if kind == PARTS and isinstance(body, CheckpointParts):
        return body
    if kind == ERROR:
        raise ModelLoadError(str(body))
    what = body if kind == FAILED else f"an unexpected answer {kind!r}"
    raise ModelLoadError(f"Cannot load CLIP model {name_or_path!r}: loading failed: {what}")
