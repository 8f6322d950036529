"""Classifies queued images in batches: decode ahead in threads, run CLIP, commit, then route."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy.exc import OperationalError

from daemon.classifier import ClipClassifier
from daemon.config import Config
from daemon.decision import decide
from daemon.exif import CameraMetadata
from daemon.fileops import sha256_bytes
from daemon.imaging import ImageError, decode_image
from daemon.router import Router
from daemon.routing import destination_for
from daemon.store import ClassifiedImage, ModelInfo, QueuedImage, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """One image made ready for the model, or the reason it could not be."""

    item: QueuedImage
    finished_at: float  # monotonic
    decode_ms: float
    pixels: torch.Tensor | None = None
    metadata: CameraMetadata | None = None
    error: str | None = None  # a decode failure: counts as an attempt
    gone: str | None = None  # the queued content is no longer at its path


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        classifier: ClipClassifier,
        router: Router,
        config: Config,
        stop: threading.Event,
        wake: threading.Event,
        on_content_changed: Callable[[Path], None],
    ) -> None:
        self._store = store
        self._classifier = classifier
        self._router = router
        self._config = config
        self._stop = stop
        self._wake = wake
        self._on_content_changed = on_content_changed
        self._inflight: dict[int, Future[Decoded]] = {}
        self._retry_at: dict[int, float] = {}  # monotonic: station clocks jump
        self._lookahead = 2 * config.model.batch_size
        self._model_info = _model_info(classifier, config)
        self.last_progress = time.monotonic()
        self._destinations_blocked_until = 0.0

    def run(self) -> None:
        with ThreadPoolExecutor(self._config.worker.decode_threads, "decode") as pool:
            while not self._stop.is_set():
                try:
                    self._step(pool)
                except OperationalError as err:
                    # Locked or unavailable database: nothing uncommitted is lost (rows stay
                    # queued and are taken again), so wait and carry on rather than die.
                    logger.error("database unavailable, retrying in %.0f s: %s", _DB_RETRY, err)
                    self._stop.wait(_DB_RETRY)
            for future in self._inflight.values():
                # Unfinished work stays queued in the database and is redone after a restart.
                future.cancel()

    def _step(self, pool: ThreadPoolExecutor) -> None:
        self._route()
        self._top_up(pool)
        batch = self._collect_batch()
        if batch:
            self._process(batch)
        elif not self._inflight:
            self._wake.wait(timeout=0.5)
            self._wake.clear()

    def idle(self) -> bool:
        return not self._inflight

    # --- routing ----------------------------------------------------------------------------------

    def _route(self) -> None:
        if time.monotonic() < self._destinations_blocked_until:
            return
        summary = self._router.route_pending()
        if summary.moved:
            self.last_progress = time.monotonic()
        if summary.waiting:
            self._destinations_blocked_until = (
                time.monotonic() + self._config.worker.destination_retry_seconds
            )

    # --- decoding ahead ---------------------------------------------------------------------------

    def _top_up(self, pool: ThreadPoolExecutor) -> None:
        room = self._lookahead - len(self._inflight)
        if room <= 0 or time.monotonic() < self._destinations_blocked_until:
            return  # a full destination disk pauses intake of new work, not just the moves
        now = time.monotonic()
        waiting = {image_id for image_id, due in self._retry_at.items() if due > now}
        for item in self._store.due_images(room, exclude=set(self._inflight) | waiting):
            self._retry_at.pop(item.id, None)
            self._inflight[item.id] = pool.submit(self._decode, item)

    def _decode(self, item: QueuedImage) -> Decoded:
        started = time.perf_counter()

        def result(**fields: object) -> Decoded:
            elapsed = (time.perf_counter() - started) * 1000
            return Decoded(item=item, finished_at=time.monotonic(), decode_ms=elapsed, **fields)  # type: ignore[arg-type]

        try:
            data = _read_no_follow(Path(item.path))
        except FileNotFoundError:
            return result(gone="file disappeared from the inbox before it was classified")
        except OSError as err:
            return result(error=f"{item.path}: cannot be read: {err.strerror or err}")
        if sha256_bytes(data) != item.sha256:
            return result(
                gone="content changed after it was queued; the new content is a new image"
            )
        images = self._config.images
        try:
            decoded = decode_image(
                data,
                name=item.path,
                formats=images.formats,
                max_pixels=images.max_pixels,
                draft_size=self._classifier.input_size,
            )
            pixels = self._classifier.preprocess(decoded.image)
        except ImageError as err:
            return result(error=str(err))
        except Exception as err:  # a decoder bug must fail this file only
            return result(error=f"{item.path}: unexpected decoder failure: {err!r}")
        return result(pixels=pixels, metadata=decoded.metadata)

    # --- batching ---------------------------------------------------------------------------------

    def _collect_batch(self) -> list[Decoded]:
        """Wait for a full batch, or until the oldest decoded image has waited long enough."""
        batch_size = self._config.model.batch_size
        max_wait = self._config.worker.batch_max_wait_seconds
        while self._inflight and not self._stop.is_set():
            ready = [future for future in self._inflight.values() if future.done()]
            pending = [future for future in self._inflight.values() if not future.done()]
            if len(ready) >= batch_size or not pending:
                break
            if ready:
                oldest = min(future.result().finished_at for future in ready)
                remaining = oldest + max_wait - time.monotonic()
                if remaining <= 0:
                    break
                wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
            else:
                wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        ready_ids = [image_id for image_id, future in self._inflight.items() if future.done()]
        return [self._inflight.pop(image_id).result() for image_id in ready_ids[:batch_size]]

    # --- classification ---------------------------------------------------------------------------

    def _process(self, batch: list[Decoded]) -> None:
        good = [decoded for decoded in batch if decoded.pixels is not None]
        if good:
            self._classify(good)
        for decoded in batch:
            if decoded.gone is not None:
                self._vanished(decoded)
            elif decoded.error is not None:
                self._failed(decoded)
        self.last_progress = time.monotonic()

    def _classify(self, good: list[Decoded]) -> None:
        started = time.perf_counter()
        pixels = torch.stack([decoded.pixels for decoded in good if decoded.pixels is not None])
        classifications = self._classifier.classify_tensors(pixels)
        per_image_ms = (time.perf_counter() - started) * 1000 / len(good)
        thresholds = self._config.decision
        results = []
        for decoded, classification in zip(good, classifications, strict=True):
            decision = decide(
                classification.target_score,
                positive_threshold=thresholds.positive_threshold,
                uncertain_threshold=thresholds.uncertain_threshold,
            )
            metadata = decoded.metadata
            results.append(
                ClassifiedImage(
                    image_id=decoded.item.id,
                    target_score=classification.target_score,
                    decision=decision,
                    probabilities=classification.probabilities,
                    embedding=classification.embedding.astype("<f4").tobytes(),
                    embedding_dim=int(classification.embedding.shape[0]),
                    decode_ms=decoded.decode_ms,
                    inference_ms=per_image_ms,
                    capture_time=metadata.capture_time if metadata else None,
                    camera_make=metadata.camera_make if metadata else None,
                    camera_model=metadata.camera_model if metadata else None,
                )
            )
            logger.info(
                "%s: %s (target score %.3f) -> %s",
                decoded.item.path,
                decision,
                classification.target_score,
                destination_for(decision),
            )
        self._store.record_classified(results, self._model_info)

    def _failed(self, decoded: Decoded) -> None:
        assert decoded.error is not None
        limit = self._config.worker.max_decode_attempts
        give_up = decoded.item.attempts + 1 >= limit
        attempts = self._store.record_decode_failure(
            decoded.item.id, decoded.error, give_up=give_up
        )
        if give_up:
            logger.error("%s (attempt %d of %d): quarantined", decoded.error, attempts, limit)
        else:
            delay = self._config.worker.retry_delay_seconds * attempts
            self._retry_at[decoded.item.id] = time.monotonic() + delay
            logger.warning(
                "%s (attempt %d of %d): retry in %.1f s", decoded.error, attempts, limit, delay
            )

    def _vanished(self, decoded: Decoded) -> None:
        assert decoded.gone is not None
        logger.warning("%s: %s", decoded.item.path, decoded.gone)
        self._store.record_vanished(decoded.item.id, decoded.gone)
        self._on_content_changed(Path(decoded.item.path))


_DB_RETRY = 2.0


def _read_no_follow(path: Path) -> bytes:
    """Read a file's bytes without ever following a symlink put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _model_info(classifier: ClipClassifier, config: Config) -> ModelInfo:
    return ModelInfo(
        name=classifier.model_name,
        revision=classifier.model_revision,
        precision=classifier.precision,
        labels=tuple(zip(classifier.labels, classifier.targets, strict=True)),
        positive_threshold=config.decision.positive_threshold,
        uncertain_threshold=config.decision.uncertain_threshold,
    )
