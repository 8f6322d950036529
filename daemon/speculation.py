"""Frames worked on during their quiet period: used only when the bytes recorded are the same.

A card reader's burst sits out its quiet period (watch.quiet_seconds) before the first row is
recorded, and the model had nothing to do meanwhile: 4 to 8% of a burst's time in the
benchmark with a 1 s quiet period, more with the default 5 s. While the worker is idle, files
in their quiet period are decoded and classified ahead. Nothing is recorded or moved: a result
waits, by path, for the row that intake records when the quiet period ends, and is used only
when the SHA-256 of the bytes it was made from is that row's. A file changed meanwhile is
decoded again as usual, so the work ahead costs CPU, never a wrong result; a frame whose work
ahead failed is decoded as usual too, and only that decode counts as an attempt.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.batching import batch_views, classify_decoded, decode_job_template, views_of
from daemon.classify.classifier import Classification, ClipClassifier
from daemon.classify.lanes import ModelLanes
from daemon.config import Config
from daemon.decode.jobs import DecodeJob, DecodeOutcome
from daemon.decode.pool import DecoderPool
from daemon.intake.stability import FileSignature, StabilityTracker

logger = logging.getLogger(__name__)

WAIT: Literal["wait"] = "wait"  # claim(): the work ahead on that path is still under way
LOOK_EVERY_SECONDS = 0.1  # the least time between two asks of the tracker for new files


@dataclass(frozen=True)
class Foreseen:
    """A frame classified ahead: its decode (pixels dropped) and the model's verdict."""

    outcome: DecodeOutcome
    classification: Classification
    inference_ms: float


@dataclass
class _Ahead:
    """The work ahead on one path, for the signature it had when it started."""

    signature: FileSignature
    started: float
    decoding: Future[DecodeOutcome] | None = None
    decoded: DecodeOutcome | None = None  # with pixels, waiting for a lane
    classifying: bool = False
    foreseen: Foreseen | None = None

    @property
    def busy(self) -> bool:
        return self.decoding is not None or self.classifying


@dataclass(frozen=True)
class _Batch:
    """Frames decoded ahead that a lane classifies (their entries are `classifying`)."""

    paths: list[str]
    outcomes: list[DecodeOutcome]
    result: Future[tuple[list[Classification], float]]


@dataclass(frozen=True)
class AheadLimits:
    """How much work ahead may be under way or kept at once."""

    batch_size: int  # model inputs per batch, as the worker's
    # Decodes in flight: one queued behind each running one, so no decoder waits for the worker
    # thread, and a row's own decode waits for one frame's at most.
    decodes: int
    held: int  # frames decoded or being decoded, not yet classified (their pixels are in memory)
    keep_seconds: float  # a result unclaimed this long is dropped (the file went elsewhere)
    kept: int = 1024  # results kept at most (about 3 KB each)


class Speculation:
    """The work ahead, driven by the worker's thread (step, claim) while lanes run batches.

    Without a tracker (`tigerwatch` tools, tests of the worker alone) nothing is done ahead.
    """

    def __init__(
        self,
        *,
        tracker: StabilityTracker | None,
        decoder: DecoderPool,
        lanes: ModelLanes,
        classifier: ClipClassifier,
        job: DecodeJob,
        limits: AheadLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracker = tracker
        self._decoder = decoder
        self._lanes = lanes
        self._classifier = classifier
        self._job = job  # the worker's job for any file; path, digest and signature set here
        self._limits = limits
        self._clock = clock
        self._ahead: dict[str, _Ahead] = {}
        self._batches: list[_Batch] = []
        self._looked_at = -float("inf")
        self._candidates: deque[tuple[Path, FileSignature]] = deque()

    @classmethod
    def of(
        cls,
        config: Config,
        tracker: StabilityTracker | None,
        decoder: DecoderPool,
        lanes: ModelLanes,
        classifier: ClipClassifier,
    ) -> Speculation:
        """The daemon's: a batch's worth of frames held decoded ahead."""
        batch_size = config.model.batch_size
        limits = AheadLimits(
            batch_size=batch_size,
            decodes=2 * config.worker.decode_processes,
            # A batch's worth: these pixels come on top of the worker's lookahead when rows
            # arrive while work ahead is under way (fp32 `crops` peaked at 0.903 GB with two).
            held=batch_size,
            keep_seconds=config.watch.quiet_seconds + 60,
        )
        job = decode_job_template(classifier, config)
        return cls(
            tracker=tracker,
            decoder=decoder,
            lanes=lanes,
            classifier=classifier,
            job=job,
            limits=limits,
        )

    @property
    def running(self) -> int:
        """Lane batches of work ahead under way (the worker leaves their lanes alone)."""
        return len(self._batches)

    def step(self, free_lanes: int) -> bool:
        """Harvest, then start decodes and a batch where there is room; True while any work
        ahead is under way (the worker then comes back soon rather than sleeping)."""
        self.harvest()
        self._forget_old()
        self._start_decodes()
        if free_lanes > len(self._batches):
            self._start_batch(free_lanes - len(self._batches))
        return bool(self._batches) or any(entry.busy for entry in self._ahead.values())

    def lane_results(self) -> list[Future[tuple[list[Classification], float]]]:
        """The results of the batches ahead in the lanes."""
        return [batch.result for batch in self._batches]

    def wait(self, timeout: float) -> None:
        """Until some work ahead ends, or `timeout` seconds."""
        futures: list[Future[Any]] = [*self.lane_results()]
        futures += [entry.decoding for entry in self._ahead.values() if entry.decoding]
        wait(futures, timeout, FIRST_COMPLETED)

    def claim(self, path: str, sha256: str) -> Foreseen | DecodeOutcome | Literal["wait"] | None:
        """What was done ahead for the row of `path` whose content is `sha256`: a verdict, a
        decode (with pixels) still to classify, WAIT while under way, or None (decode as usual).
        As of the last harvest()."""
        entry = self._ahead.get(path)
        if entry is None:
            return None
        if entry.busy:
            return WAIT
        del self._ahead[path]
        if entry.foreseen is not None and entry.foreseen.outcome.sha256 == sha256:
            return entry.foreseen
        if entry.decoded is not None and entry.decoded.sha256 == sha256:
            return entry.decoded
        return None  # failed, or made from other bytes than those recorded

    def close(self) -> None:
        for entry in self._ahead.values():
            if entry.decoding is not None:
                entry.decoding.cancel()
        self._ahead.clear()

    # --- decoding ahead ---------------------------------------------------------------------------

    def _start_decodes(self) -> None:
        """Keep the decoders busy from a list of candidates, asked of the tracker as it runs
        out (each is checked still quiet and unchanged when its turn comes)."""
        if self._tracker is None:
            return
        decoding = sum(entry.decoding is not None for entry in self._ahead.values())
        held = sum(entry.busy or entry.decoded is not None for entry in self._ahead.values())
        # Nothing new while `kept` results wait: dropping one to make room would drop the
        # soonest due, which quieting() lists first again (review hX8: decoded over and over).
        kept = self._limits.kept - len(self._ahead)
        room = min(self._limits.decodes - decoding, self._limits.held - held, kept)
        now = self._clock()
        if room > 0 and not self._candidates and now >= self._looked_at + LOOK_EVERY_SECONDS:
            self._looked_at = now
            wanted = self._limits.held - held
            self._candidates.extend(self._tracker.quieting(wanted, skip=self._done_or_doing))
        while room > 0 and self._candidates:
            path, signature = self._candidates.popleft()
            # Taken by intake meanwhile: its row decodes it, and a result would wait in vain.
            if self._tracker.still_quiet(path, signature):
                room -= self._start_decode(str(path), signature, now)

    def _done_or_doing(self, path: Path, signature: FileSignature) -> bool:
        entry = self._ahead.get(str(path))
        return entry is not None and (entry.busy or entry.signature == signature)

    def _start_decode(self, path: str, signature: FileSignature, now: float) -> bool:
        job = dataclasses.replace(
            self._job,
            path=path,
            sha256=None,
            unchanged_since=(signature.size, signature.mtime_ns),
        )
        try:
            future = self._decoder.submit(job)
        except RuntimeError:  # the pool is closing: the daemon is stopping
            return False
        self._ahead[path] = _Ahead(signature, now, decoding=future)
        return True

    # --- classifying ahead ------------------------------------------------------------------------

    def _start_batch(self, free_lanes: int) -> None:
        ready = [(path, e.decoded) for path, e in self._ahead.items() if e.decoded is not None]
        if not ready:
            return
        views = sum(views_of(outcome) for _, outcome in ready)
        decoding = any(entry.decoding is not None for entry in self._ahead.values())
        if decoding and views < self._limits.batch_size:
            return  # more on the way: worth a fuller batch
        limit = batch_views(self._limits.batch_size, views, lanes=free_lanes, more=decoding)
        paths: list[str] = []
        outcomes: list[DecodeOutcome] = []
        taken = 0
        for path, outcome in ready:
            if outcomes and taken + views_of(outcome) > limit:
                break
            paths.append(path)
            outcomes.append(outcome)
            taken += views_of(outcome)
        for path in paths:
            self._ahead[path].decoded, self._ahead[path].classifying = None, True
        result = self._lanes.submit(classify_decoded, self._classifier, outcomes)
        self._batches.append(_Batch(paths, outcomes, result))

    # --- results ----------------------------------------------------------------------------------

    def harvest(self) -> None:
        """Take in the decodes and batches that finished; failures just end the work ahead."""
        for path, entry in list(self._ahead.items()):
            if entry.decoding is not None and entry.decoding.done():
                outcome = _outcome_of(entry.decoding)
                entry.decoding = None
                if outcome is not None and outcome.pixels is not None:
                    entry.decoded = outcome
                else:
                    logger.debug("%s: not decoded ahead (decoded when recorded)", path)
        for batch in [batch for batch in self._batches if batch.result.done()]:
            self._batches.remove(batch)
            self._classified(batch)

    def _classified(self, batch: _Batch) -> None:
        entries = [self._ahead[path] for path in batch.paths]  # busy: never dropped meanwhile
        for entry in entries:
            entry.classifying = False
        try:
            classifications, per_image_ms = batch.result.result()
        except Exception as err:  # the worker meets it again, with its retries, if it recurs
            logger.info("classifying %d frame(s) ahead failed: %r", len(entries), err)
            return
        for entry, outcome, classification in zip(
            entries, batch.outcomes, classifications, strict=True
        ):
            pixels_dropped = dataclasses.replace(outcome, pixels=None)
            entry.foreseen = Foreseen(pixels_dropped, classification, per_image_ms)

    def _forget_old(self) -> None:
        """Drop results nobody claimed in time (the file was deleted, a duplicate, rejected),
        and the oldest beyond the cap."""
        oldest = self._clock() - self._limits.keep_seconds
        idle = [path for path, entry in self._ahead.items() if not entry.busy]
        stale = {path for path in idle if self._ahead[path].started < oldest}
        fresh = [path for path in idle if path not in stale]
        for path in [*stale, *fresh[: max(0, len(fresh) - self._limits.kept)]]:
            del self._ahead[path]


def _outcome_of(future: Future[DecodeOutcome]) -> DecodeOutcome | None:
    try:
        return future.result()
    except Exception:  # cancelled, or the pool failed: nothing was done ahead
        return None
