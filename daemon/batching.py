"""Model batches: the decode job they start from, the views the next one takes, running one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future

from daemon.classify.classifier import Classification, ClipClassifier
from daemon.config import Config
from daemon.decode.jobs import DecodeJob, DecodeOutcome

# A share of a burst's last views is at least this many: smaller ones cost more in overhead
# than they save.
TAIL_MIN_VIEWS = 4


def batch_views(batch_size: int, ready: int, *, lanes: int, more: bool) -> int:
    """The most model inputs the next batch may take out of `ready`.

    At the end of a burst (nothing decoding, nothing more queued) with several lanes, a batch
    takes its share of what is left, not a whole batch: the lanes then finish together, where
    one lane ran the last whole batch while the others sat idle (measured: the last 0.35 s of
    an int8 burst of 301 frames half idle; a whole batch of crops takes 0.8 s in bf16).
    A share is at least TAIL_MIN_VIEWS; a batch ends at the first frame that does not fit, so
    one of multi-view frames may hold less.
    """
    if more or lanes < 2:
        return batch_size
    return min(batch_size, max(TAIL_MIN_VIEWS, -(-ready // lanes)))


def view_count(future: Future[DecodeOutcome]) -> int:
    """Model inputs a finished decode brings: its views, or 1 for a failed one."""
    try:
        outcome = future.result()
    except Exception:  # the pool's failure: costs no model input, counted as one to move on
        return 1
    return views_of(outcome)


def views_of(outcome: DecodeOutcome) -> int:
    return 1 if outcome.pixels is None else int(outcome.pixels.shape[0])


def classify_decoded(
    classifier: ClipClassifier, outcomes: Sequence[DecodeOutcome]
) -> tuple[list[Classification], float]:
    """Runs in a lane: the classifications of decoded frames, and the batch's wall milliseconds
    per frame."""
    started = time.perf_counter()
    pixels = [outcome.pixels for outcome in outcomes if outcome.pixels is not None]
    lights = [outcome.infrared for outcome in outcomes]
    classifications = classifier.classify_pixels(pixels, lights)
    return classifications, (time.perf_counter() - started) * 1000 / len(outcomes)


def decode_job_template(classifier: ClipClassifier, config: Config) -> DecodeJob:
    """The decode job of every file, less its path and digest."""
    images = config.images
    return DecodeJob(
        path="",
        sha256=None,
        formats=tuple(images.formats),
        max_pixels=images.max_pixels,
        draft_size=classifier.input_size,
        spec=classifier.preprocess_spec,
        max_file_bytes=images.max_file_bytes,
        inboxes=tuple(str(inbox.path) for inbox in config.paths.inbox),
        view=config.model.view,
        strips=config.strips,
    )
