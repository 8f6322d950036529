"""Classifies queued images in batches: decode ahead in processes, run CLIP, commit, route."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.batching import batch_views, classify_decoded, decode_job_template, view_count
from daemon.classify.classifier import Classification, ClipClassifier
from daemon.classify.lanes import ModelLanes
from daemon.config import Config
from daemon.decode.jobs import DecodeOutcome
from daemon.decode.pool import DecoderPool, DecoderPoolError
from daemon.delivery.router import RoutingLoop
from daemon.embeddings import as_stored, to_stored
from daemon.heads import LinearHead
from daemon.intake.stability import StabilityTracker
from daemon.outcomes import decide, destination_for
from daemon.speculation import WAIT, Foreseen, Speculation
from daemon.storage.store import ClassifiedImage, ModelInfo, QueuedImage, Store, StoreUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """One image made ready for the model, or the reason it could not be."""

    item: QueuedImage
    outcome: DecodeOutcome


@dataclass(frozen=True)
class RunningBatch:
    """Decoded images the model is classifying in one of its lanes."""

    images: list[Decoded]
    result: Future[tuple[list[Classification], float]]  # and the batch's wall ms per image


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        classifier: ClipClassifier,
        routing: RoutingLoop,
        decoder: DecoderPool,
        lanes: ModelLanes,
        config: Config,
        stop: threading.Event,
        wake: threading.Event,
        on_content_changed: Callable[[Path], None],
        head: LinearHead | None = None,
        quieting: StabilityTracker | None = None,
    ) -> None:
        self._store = store
        self._head = head  # a trained head's score replaces the zero-shot one
        self._classifier = classifier
        self._routing = routing
        self._decoder = decoder
        self._lanes = lanes
        self._running: list[RunningBatch] = []
        self._model_failures_in_a_row = 0
        self._model_tries: dict[int, int] = {}  # by image id: frames the model failed on alone
        self._config = config
        self._stop = stop
        self._wake = wake
        self._on_content_changed = on_content_changed
        self._inflight: dict[int, tuple[QueuedImage, Future[DecodeOutcome]]] = {}
        self._finished_at: dict[int, float] = {}  # monotonic, set by the futures' callbacks
        self._retry_at: dict[int, float] = {}  # monotonic: station clocks jump
        self._lookahead = 2 * config.model.batch_size
        self._queue_drained = False  # the last top-up took every due row
        self._model_info = _model_info(classifier, config)
        self._job = decode_job_template(classifier, config)
        # Files in their quiet period, worked on while nothing is queued (only then).
        self._speculation = Speculation.of(config, quieting, decoder, lanes, classifier)
        self._parked: dict[int, QueuedImage] = {}  # rows whose work ahead is under way
        self._foreseen: list[ClassifiedImage] = []  # taken, classified ahead, to record
        self.last_progress = time.monotonic()

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except StoreUnavailable as err:
                    # Locked or unavailable database: nothing uncommitted is lost (rows stay
                    # queued and are taken again), so wait and carry on rather than die.
                    logger.error("database unavailable, retrying in %.0f s: %s", _DB_RETRY, err)
                    self._stop.wait(_DB_RETRY)
        finally:
            for _, future in self._inflight.values():
                # Unfinished work stays queued in the database and is redone after a restart.
                future.cancel()
            self._speculation.close()
            self._lanes.close()

    def _step(self) -> None:
        self._top_up()
        self._record_finished()
        if len(self._running) + self._speculation.running < self._lanes.count:
            batch = self._collect_batch()
            if batch:
                self._start(batch)
                return
        if self._running or self._speculation.running:
            # Until a lane's batch ends, the worker's or one ahead (review of 9485063: with the
            # lanes busy ahead and rows decoded, this loop spun, 280,000 turns in one burst).
            lanes = [running.result for running in self._running]
            wait([*lanes, *self._speculation.lane_results()], 0.5, FIRST_COMPLETED)
        elif not self._inflight:
            self._idle()
            self._wake.clear()

    def _idle(self) -> None:
        """Nothing to classify: work ahead on files in their quiet period (daemon/speculation.py)
        until rows are queued (the wake event), for half a second at most. Rows waiting for
        their work ahead to end come back as soon as some of it ends."""
        deadline = time.monotonic() + 0.5
        # A full destination disk: no row is taken, so work ahead would only be dropped after
        # keep_seconds and done again once space returns (review hX8). Parked rows are still
        # served: each top-up harvests.
        ahead = not self._routing.blocked
        while ahead and not self._wake.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._speculation.step(self._lanes.count):
                self._speculation.wait(min(left, _AHEAD_LOOK))
            else:  # nothing under way, or the tracker's look was too recent: look again soon
                self._wake.wait(min(left, _AHEAD_LOOK))
            if self._parked:
                return
        self._wake.wait(max(0.0, deadline - time.monotonic()))

    def idle(self) -> bool:
        return not self._inflight and not self._running and not self._parked

    @property
    def store(self) -> Store:
        """The queue this worker takes from (the health check measures its progress)."""
        return self._store

    # --- decoding ahead ---------------------------------------------------------------------------

    def _top_up(self) -> None:
        self._speculation.harvest()
        for item in list(self._parked.values()):
            self._take(item)
        try:
            self._take_due()
        finally:
            if self._foreseen:  # all classified ahead that this top-up took, in one commit
                results, self._foreseen = self._foreseen, []
                self._record(results)

    def _take_due(self) -> None:
        room = self._lookahead - len(self._inflight) - len(self._parked)
        if room <= 0 or self._routing.blocked:
            self._queue_drained = False  # not asked: more may be queued
            return  # a full destination disk pauses intake of new work, not just the moves
        now = time.monotonic()
        waiting = {image_id for image_id, due in self._retry_at.items() if due > now}
        # Still queued in the database until their batch is recorded: not to be taken twice.
        classifying = {d.item.id for running in self._running for d in running.images}
        # Classified ahead and taken by this top-up, queued until it records them (review of
        # 9485063: a parked row taken as foreseen was taken again here and decoded twice).
        foreseen = {result.image_id for result in self._foreseen}
        exclude = set(self._inflight) | set(self._parked) | waiting | classifying | foreseen
        due = self._store.due_images(room, exclude=exclude)
        self._queue_drained = len(due) < room
        for item in due:
            self._retry_at.pop(item.id, None)
            self._take(item)

    def _take(self, item: QueuedImage) -> None:
        """Decode a due row's file, or use what was done ahead while it was quiet."""
        self._parked.pop(item.id, None)
        ahead = self._speculation.claim(item.path, item.sha256)
        if ahead == WAIT:
            self._parked[item.id] = item
        elif isinstance(ahead, Foreseen):
            decoded = Decoded(item, ahead.outcome)
            verdict = self._classified(decoded, ahead.classification, ahead.inference_ms)
            self._foreseen.append(verdict)
        elif isinstance(ahead, DecodeOutcome):
            ready: Future[DecodeOutcome] = Future()
            ready.set_result(ahead)
            self._finished_at[item.id] = time.monotonic()
            self._inflight[item.id] = (item, ready)
        else:
            self._inflight[item.id] = (item, self._submit(item))

    def _submit(self, item: QueuedImage) -> Future[DecodeOutcome]:
        future = self._decoder.submit(replace(self._job, path=item.path, sha256=item.sha256))
        future.add_done_callback(lambda _: self._finished_at.__setitem__(item.id, time.monotonic()))
        return future

    # --- batching ---------------------------------------------------------------------------------

    def _collect_batch(self) -> list[Decoded]:
        """Wait for a full batch, or until the oldest decoded image has waited long enough.

        A batch is counted in views, not frames (a frame in `crops` is 2 or more model inputs),
        so the model's batch stays within model.batch_size; a frame with more views goes alone.
        """
        batch_size = self._config.model.batch_size
        max_wait = self._config.worker.batch_max_wait_seconds
        while self._inflight and not self._stop.is_set():
            self._record_finished()  # a lane that finished while this batch fills
            pending = [future for _, future in self._inflight.values() if not future.done()]
            if self._ready_views() >= batch_size or not pending:
                break
            timeout = 0.5
            if self._done_ids():
                oldest = min(self._finished_at.get(image_id, 0.0) for image_id in self._done_ids())
                timeout = oldest + max_wait - time.monotonic()
                if timeout <= 0:
                    break
            running: list[Future[Any]] = [batch.result for batch in self._running]
            wait([*pending, *running], timeout=timeout, return_when=FIRST_COMPLETED)
        self._top_up()  # rows queued during the wait: then this is no burst's end (hX7)
        batch: list[Decoded] = []
        views = 0
        limit = batch_views(
            batch_size, self._ready_views(), lanes=self._lanes.count, more=self._more_coming()
        )
        for image_id in self._done_ids():
            cost = view_count(self._inflight[image_id][1])
            if batch and views + cost > limit:
                break
            item, future = self._inflight.pop(image_id)
            self._finished_at.pop(image_id, None)
            views += cost
            decoded = self._result(item, future)
            if decoded is not None:
                batch.append(decoded)
        return batch

    def _more_coming(self) -> bool:
        """Frames still decoding, or more queued than the last top-up could take."""
        decoding = any(not future.done() for _, future in self._inflight.values())
        return decoding or not self._queue_drained

    def _ready_views(self) -> int:
        return sum(view_count(self._inflight[image_id][1]) for image_id in self._done_ids())

    def _done_ids(self) -> list[int]:
        return [image_id for image_id, (_, future) in self._inflight.items() if future.done()]

    def _result(self, item: QueuedImage, future: Future[DecodeOutcome]) -> Decoded | None:
        """The decoded image, or None when the pool (not the image) failed: tried again later."""
        try:
            return Decoded(item=item, outcome=future.result())
        except (DecoderPoolError, CancelledError) as err:
            logger.error("%s: decoder unavailable, will try again: %s", item.path, err)
            self._retry_at[item.id] = time.monotonic() + _DB_RETRY
            return None
        except Exception as err:  # one file's trouble must not end the worker
            # A bug on the parent's side of one job (say, a header that trips the budget's
            # parser) counts as a failed attempt of that file: retried, then quarantined.
            logger.exception("%s: decoding failed in the daemon itself", item.path)
            return Decoded(item=item, outcome=DecodeOutcome(error=f"{item.path}: {err!r}"))

    # --- classification ---------------------------------------------------------------------------

    def _start(self, batch: list[Decoded]) -> None:
        """Hand the decoded images to a free lane; record the failed ones now."""
        good = [decoded for decoded in batch if decoded.outcome.pixels is not None]
        if good:
            self._run(good)
        for decoded in batch:
            if decoded.outcome.gone is not None:
                self._vanished(decoded)
            elif decoded.outcome.error is not None:
                self._failed(decoded)
        if len(good) < len(batch):
            self._routing.wake()  # a quarantined file is moved out of the inbox
            self.last_progress = time.monotonic()

    def _run(self, good: list[Decoded]) -> None:
        self._running.append(RunningBatch(good, self._lanes.submit(self._classify, good)))

    def _classify(self, good: list[Decoded]) -> tuple[list[Classification], float]:
        """Runs in a lane: the classifications, and the batch's wall milliseconds per image."""
        return classify_decoded(self._classifier, [decoded.outcome for decoded in good])

    def _record_finished(self) -> None:
        """Record the batches the model has finished, in this (the database's) thread."""
        finished = [running for running in self._running if running.result.done()]
        for running in finished:
            self._running.remove(running)
            try:
                classifications, per_image_ms = running.result.result()
            except Exception as err:  # a model bug, out of memory: see _model_failed
                self._model_failed(running.images, err)
                continue
            self._model_failures_in_a_row = 0
            for decoded in running.images:
                self._model_tries.pop(decoded.item.id, None)
            self._record(
                [
                    self._classified(decoded, classification, per_image_ms)
                    for decoded, classification in zip(running.images, classifications, strict=True)
                ]
            )

    def _record(self, results: list[ClassifiedImage]) -> None:
        self._store.record_classified(results, self._model_info)
        self._routing.wake()
        self.last_progress = time.monotonic()

    def _model_failed(self, images: list[Decoded], err: Exception) -> None:
        """A batch the model raised on is split, so that one frame cannot hold up the others.

        A frame that fails alone while other frames go through is retried with the decode
        retries' backoff and quarantined after worker.max_decode_attempts, its reason recorded.
        When frames fail alone MODEL_FAILURE_LIMIT times in a row, the model itself is failing:
        this raises, the worker thread ends and systemd restarts the daemon, and no frame pays
        for it with an attempt. (Attempts here are counted in memory for that reason.)
        """
        if len(images) > 1:
            logger.error(
                "the model failed on a batch of %d frames (%r); classifying each alone",
                len(images),
                err,
            )
            for decoded in images:
                self._run([decoded])
            return
        self._model_failures_in_a_row += 1
        if self._model_failures_in_a_row >= MODEL_FAILURE_LIMIT:
            raise RuntimeError(
                f"the model failed on {self._model_failures_in_a_row} frames in a row, the last "
                f"{images[0].item.path}: {err!r}"
            ) from err
        self._model_retry(images[0], err)

    def _model_retry(self, decoded: Decoded, err: Exception) -> None:
        item = decoded.item
        tries = self._model_tries[item.id] = self._model_tries.get(item.id, 0) + 1
        limit = self._config.worker.max_decode_attempts
        error = f"{item.path}: the model failed on this frame: {err!r}"
        logger.error("%s (attempt %d of %d)", error, tries, limit, exc_info=err)
        if tries >= limit:
            self._store.record_decode_failure(item.id, error, give_up=True)
            self._model_tries.pop(item.id)
            logger.error("%s: quarantined", item.path)
            self._routing.wake()
        else:
            delay = self._config.worker.retry_delay_seconds * tries
            self._retry_at[item.id] = time.monotonic() + delay

    def _classified(
        self, decoded: Decoded, classification: Classification, inference_ms: float
    ) -> ClassifiedImage:
        """One image's result, decided with the thresholds of its light."""
        positive, uncertain = self._config.decision.thresholds(infrared=classification.infrared)
        score = self._score(classification)
        decision = decide(score, positive_threshold=positive, uncertain_threshold=uncertain)
        logger.info(
            "%s: %s (target score %.3f, %s, view %d of %d) -> %s",
            decoded.item.path,
            decision,
            score,
            "infrared" if classification.infrared else "day",
            classification.view + 1,
            len(classification.views),
            destination_for(decision),
        )
        outcome = decoded.outcome
        return ClassifiedImage(
            image_id=decoded.item.id,
            target_score=score,
            decision=decision,
            probabilities=classification.probabilities,
            embedding=to_stored(classification.embedding),
            embedding_dim=int(classification.embedding.shape[0]),
            decode_ms=outcome.decode_ms,
            inference_ms=inference_ms,
            capture_time=outcome.capture_time,
            camera_make=outcome.camera_make,
            camera_model=outcome.camera_model,
            infrared=outcome.infrared,
            strips=(outcome.strip_top, outcome.strip_bottom),
            thresholds=(positive, uncertain),
            head_id=None if self._head is None else self._head.id,
        )

    def _score(self, classification: Classification) -> float:
        """The tiger score the thresholds apply to: the trained head's when there is one."""
        if self._head is None:
            return classification.target_score
        # The stored (float16) vector, so that the row's embedding reproduces its score.
        embedding = as_stored(classification.embedding)
        return self._head.score(embedding, infrared=classification.infrared)

    def _failed(self, decoded: Decoded) -> None:
        error = decoded.outcome.error
        assert error is not None
        limit = self._config.worker.max_decode_attempts
        give_up = decoded.item.attempts + 1 >= limit
        attempts = self._store.record_decode_failure(decoded.item.id, error, give_up=give_up)
        if give_up:
            logger.error("%s (attempt %d of %d): quarantined", error, attempts, limit)
        else:
            delay = self._config.worker.retry_delay_seconds * attempts
            self._retry_at[decoded.item.id] = time.monotonic() + delay
            logger.warning("%s (attempt %d of %d): retry in %.1f s", error, attempts, limit, delay)

    def _vanished(self, decoded: Decoded) -> None:
        gone = decoded.outcome.gone
        assert gone is not None
        path = decoded.item.path
        if self._store.record_vanished(decoded.item.id, gone, path):
            logger.warning("%s: %s", path, gone)
        else:
            logger.info("%s: renamed in the inbox while queued; read from its new name", path)
        self._on_content_changed(Path(path))


_DB_RETRY = 2.0
# Frames the model fails on alone, one after another with none classified between: beyond
# this, the fault is the model's (or the machine's), not the frames'.
MODEL_FAILURE_LIMIT = 3
# The longest an idle worker waits for work ahead before it looks for new rows and files.
_AHEAD_LOOK = 0.1


def _model_info(classifier: ClipClassifier, config: Config) -> ModelInfo:
    return ModelInfo(
        name=classifier.model_name,
        revision=classifier.model_revision,
        precision=classifier.precision,
        labels=tuple(zip(classifier.labels, classifier.targets, strict=True)),
        positive_threshold=config.decision.positive_threshold,
        uncertain_threshold=config.decision.uncertain_threshold,
    )
