"""Turns hints about inbox paths into queue rows: stable files are hashed and recorded."""

from __future__ import annotations

import errno
import io
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon.beneath import UnsafePathError, folder_beneath
from daemon.config_deployments import DeploymentsFrom
from daemon.decode.header import looks_complete
from daemon.hashing import open_regular_file, sha256_stream
from daemon.intake.names import NameFilter
from daemon.intake.scanner import scan_inbox
from daemon.intake.stability import Hint, Readiness, StabilityTracker, StablePath
from daemon.storage.store import Arrival, ArrivalOutcome, Store, StoreUnavailable

logger = logging.getLogger(__name__)

# Each commit costs an fsync (synchronous=FULL): a drop of thousands of files is recorded in
# slices of this many, or of what one interval gathered, whichever comes first.
ARRIVALS_PER_COMMIT = 64
COMMIT_INTERVAL_SECONDS = 0.25


class Intake:
    """Owns the path from "something happened here" to "this content is queued".

    `hint` may be called from any thread (watchdog, scheduler); everything else runs on the
    intake thread, so the database sees one writer of new rows.
    """

    def __init__(
        self,
        *,
        store: Store,
        tracker: StabilityTracker,
        name_filter: NameFilter,
        inboxes: Sequence[Path],
        on_queued: Callable[[], None],
        max_file_bytes: int | None = None,
        deployments: DeploymentsFrom | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self._store = store
        self._deployments = deployments or DeploymentsFrom()
        self._max_file_bytes = max_file_bytes
        self._tracker = tracker
        self._filter = name_filter
        self._inboxes = tuple(inboxes)
        self._on_queued = on_queued
        self._hints: queue.SimpleQueue[tuple[Path, Hint]] = queue.SimpleQueue()
        # Set by each hint, and by whoever stops the intake thread (so it need not wait a tick).
        self._hinted = wake or threading.Event()

    @property
    def tracker(self) -> StabilityTracker:
        """The paths in their quiet period (the worker works on some of them ahead)."""
        return self._tracker

    def hint(self, path: Path, kind: Hint = Hint.LOOK) -> None:
        self._hints.put((path, kind))
        self._hinted.set()

    def rescan(self) -> None:
        """Hint every candidate in every inbox: catches whatever the events missed."""
        for root in self._inboxes:
            self.hint(root)

    def wait_for_hints(self, timeout: float) -> None:
        """Return when a hint arrives (or the wake event is set), or after `timeout` seconds."""
        if self._hinted.wait(max(0.0, timeout)):
            self._hinted.clear()

    def seconds_to_due(self) -> float | None:
        """How long until a pending path is next worth a look (0: now); None: none pending."""
        return self._tracker.seconds_to_due()

    def run_once(self, *, due_only: bool = False, stop: threading.Event | None = None) -> int:
        """Drain hints, then record every path that has become stable; returns how many.

        `due_only`: look only at new paths and those whose quiet period has run out (a pass
        woken by a hint or a due time), not at every pending one. Once `stop` is set, the round
        ends after the slice under way: a card of thousands of frames dumped while the daemon
        was down must not hold its shutdown (the rest is still in the inbox for the next start).
        """
        self._drain_hints()
        recorded = 0
        pending: list[Arrival] = []
        deadline = time.monotonic() + COMMIT_INTERVAL_SECONDS
        stable = self._tracker.take_stable(due_only=due_only)
        if not stable:
            return 0  # most rounds: nothing for the database to be asked about
        waiting = self._waiting(stable)
        if waiting is None:
            return 0
        for item in stable:
            if str(item.path) in waiting:
                continue  # already recorded, its file not yet moved out of the inbox
            examined = self._examine(item)
            if isinstance(examined, Arrival):
                pending.append(examined)
            else:
                recorded += examined
            # A big drop is committed in slices, so the worker starts on the first ones early.
            if len(pending) >= ARRIVALS_PER_COMMIT or time.monotonic() >= deadline:
                recorded += self._commit(pending)
                pending = []
                deadline = time.monotonic() + COMMIT_INTERVAL_SECONDS
                if stop is not None and stop.is_set():
                    return recorded
        recorded += self._commit(pending)
        return recorded

    def _drain_hints(self) -> None:
        while True:
            try:
                path, kind = self._hints.get_nowait()
            except queue.Empty:
                return
            if not self._reachable(path):
                continue
            if _is_real_directory(path):
                for found in scan_inbox(path, self._filter):
                    self._tracker.note(found)
            elif path not in self._inboxes:
                # An inbox root that is no folder now (deleted, swapped for a link) is the
                # watcher's health check's business: moving it away would lose the inbox.
                self._tracker.note(path, kind)

    def _reachable(self, path: Path) -> bool:
        """An inbox, or a path below one with no link among the folders on the way."""
        if path in self._inboxes:
            return True
        try:
            with folder_beneath(path, self._inboxes):
                return True
        except UnsafePathError as err:
            logger.debug("%s: hint ignored: %s", path, err.strerror)
            return False
        except OSError:
            return True  # gone or unreadable: the tracker and _hash say what became of it

    def _waiting(self, stable: list[StablePath]) -> set[str] | None:
        """Those of the stable paths that already have a row, asked in one go (a burst's
        paths one statement each would hold the GIL the model lanes need); None, every path
        looked at again next round, when the database cannot say."""
        try:
            return self._store.waiting_among(str(item.path) for item in stable)
        except StoreUnavailable as err:
            logger.error("database unavailable, %d file(s) will be retried: %s", len(stable), err)
            for item in stable:
                self._tracker.note(item.path)
            return None

    def _examine(self, item: StablePath) -> Arrival | int:
        """An Arrival to record, or how many rows were written for it on the spot (rejects)."""
        path = str(item.path)
        try:
            if item.kind is Readiness.FILE:
                return self._hash(item)
            reason = (
                "symbolic link (never followed)"
                if item.kind is Readiness.LINK
                else "not a regular file"
            )
            logger.warning("%s: rejected: %s", path, reason)
            self._store.record_reject(path, reason)
            self._on_queued()
            return 1
        except StoreUnavailable as err:
            logger.error("%s: database unavailable, will retry: %s", path, err)
            self._tracker.note(item.path)
            return 0
        except Exception:
            # One odd path must not stop intake; it is looked at again on the next rescan.
            logger.exception("%s: could not be recorded", path)
            return 0

    def _hash(self, item: StablePath) -> Arrival | int:
        path = str(item.path)
        try:
            # Read from the inbox down, never through a folder swapped for a link.
            with folder_beneath(item.path, self._inboxes) as folder:
                name = item.path.name
                with open_regular_file(Path(name), dir_fd=folder) as stream:
                    size = os.fstat(stream.fileno()).st_size  # the opened file, not the name
                    if self._max_file_bytes is not None and size > self._max_file_bytes:
                        return self._too_large(item, size, self._max_file_bytes)
                    if not self._complete_enough(item, stream):
                        return 0
                    digest = sha256_stream(stream)
                after = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except UnsafePathError as err:
            logger.warning("%s: left alone: %s", path, err.strerror)
            return 0
        except FileNotFoundError:
            logger.info("%s: gone before it could be recorded", path)
            return 0
        except OSError as err:
            return self._unreadable(item, err)
        if (after.st_size, after.st_mtime_ns) != (item.signature.size, item.signature.mtime_ns):
            self._tracker.note(item.path)  # still being written after all: wait again
            return 0
        deployment = self._deployments.deployment_of(item.path, self._inboxes)
        return Arrival(path, digest, after.st_size, deployment)

    def _complete_enough(self, item: StablePath, stream: io.FileIO) -> bool:
        """False (and held for the incomplete grace) when the data stops before its end marker.

        A partial upload must never become an `images` row: FTP servers write in place, and a
        stalled link looks quiet. Once the grace has run out the file is taken as it is, and a
        truncated one fails decoding and is quarantined as truncated.
        """
        if looks_complete(stream):
            return True
        if item.waited_out:
            logger.warning(
                "%s: still incomplete after the grace period; taking it as it is", item.path
            )
            return True
        logger.info(
            "%s: image data incomplete (upload under way?): waiting for the rest", item.path
        )
        self._tracker.hold_incomplete(item)
        return False

    def _too_large(self, item: StablePath, size: int, limit: int) -> int:
        reason = f"file is {size} bytes, more than images.max_file_bytes ({limit}); not read"
        logger.error("%s: rejected: %s", item.path, reason)
        self._store.record_reject(str(item.path), reason)
        self._on_queued()
        return 1

    def _commit(self, arrivals: Sequence[Arrival]) -> int:
        """Record arrivals in one transaction; returns how many became new rows."""
        if not arrivals:
            return 0
        try:
            outcomes = self._store.record_arrivals(arrivals)
        except StoreUnavailable as err:
            logger.error("database unavailable, %d files will be retried: %s", len(arrivals), err)
            for arrival in arrivals:
                self._tracker.note(Path(arrival.path))
            return 0
        except Exception:
            if len(arrivals) == 1:
                logger.exception("%s: could not be recorded", arrivals[0].path)
                return 0
            # Find the one odd file by recording the rest one at a time.
            return sum(self._commit([arrival]) for arrival in arrivals)
        for arrival, outcome in zip(arrivals, outcomes, strict=True):
            _log_outcome(arrival, outcome)
        recorded = sum(outcome is not ArrivalOutcome.ALREADY_KNOWN for outcome in outcomes)
        if recorded:
            self._on_queued()
        return recorded

    def _unreadable(self, item: StablePath, err: OSError) -> int:
        path = str(item.path)
        if err.errno == errno.ELOOP:  # became a symlink between the look and the read
            self._tracker.note(item.path)
            return 0
        reason = f"cannot be read: {err.strerror or err}"
        logger.error("%s: rejected: %s", path, reason)
        self._store.record_reject(path, reason)
        self._on_queued()
        return 1


def _log_outcome(arrival: Arrival, outcome: ArrivalOutcome) -> None:
    if outcome is ArrivalOutcome.DUPLICATE:
        logger.info(
            "%s: same content as an earlier image (sha256 %s): duplicate",
            arrival.path,
            arrival.sha256[:12],
        )
    elif outcome is ArrivalOutcome.NEW:
        logger.debug("%s: queued (sha256 %s)", arrival.path, arrival.sha256[:12])


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
