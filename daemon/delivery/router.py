"""Moves decided files out of the inboxes durably: intent recorded first, result after."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.destinations import dated_folder, destination_root
from daemon.delivery.fileops import (
    SettleOutcome,
    move_durably,
    safe_filename,
    settle_move,
    unique_destination,
    write_sidecar,
)
from daemon.delivery.move_errors import Scope, classify_move_error
from daemon.delivery.permissions import Ownership
from daemon.delivery.setaside import EntryFailures
from daemon.outcomes import Destination
from daemon.storage.schema import printable
from daemon.storage.store import PendingMove, RowKind, Store, StoreUnavailable

logger = logging.getLogger(__name__)


class DestinationUnavailableError(Exception):
    """A destination refuses every file (full disk, read-only, permissions); the moves wait."""


@dataclass(frozen=True)
class RouteSummary:
    moved: int
    waiting: int


class Router:
    def __init__(
        self,
        store: Store,
        paths: Paths,
        ownership: Ownership | None = None,
        failures: EntryFailures | None = None,
    ) -> None:
        self._store = store
        self._paths = paths
        self._ownership = ownership or Ownership()
        # One entry that will not move waits alone; see setaside.py.
        self._failures = failures or EntryFailures(store, first_delay=30.0, max_attempts=5)
        # Quarantine notes that could not be written (full disk), by quarantined file: the
        # reason is in the database either way, but staff read it beside the file.
        self._notes_owed: dict[Path, PendingMove] = {}

    def route_pending(self) -> RouteSummary:
        """Settle or perform every recorded move; stops at the first unavailable destination."""
        self._retry_owed_notes()
        moves = self._store.pending_moves()
        if not moves:
            return RouteSummary(0, 0)
        resumed = {(move.kind, move.id) for move in moves if move.intended_path is not None}
        moves = self._assign_destinations(moves)
        finished: list[tuple[RowKind, int, str]] = []
        try:
            for index, move in enumerate(moves):
                if not self._failures.due(move):
                    continue  # an entry that failed waits out its own backoff, alone
                try:
                    destination = self._finish(move, resumed=(move.kind, move.id) in resumed)
                except DestinationUnavailableError as err:
                    waiting = len(moves) - index
                    logger.error("%s; %d file(s) wait in the inbox until it is fixed", err, waiting)
                    return RouteSummary(len(finished), waiting)
                except OSError as err:
                    # This entry's own trouble: the others go on without waiting for it.
                    self._failures.failed(move, err)
                    continue
                self._failures.moved(move)
                if destination is not None:
                    finished.append((move.kind, move.id, str(destination)))
        finally:
            # One commit for the round: a crash before it leaves rows whose files are already
            # in place, which start-up settlement recognises and closes.
            self._store.record_moved_many(finished)
        return RouteSummary(len(finished), 0)

    def _assign_destinations(self, moves: list[PendingMove]) -> list[PendingMove]:
        """Record every new destination in one commit, before any file is touched."""
        taken: set[Path] = {Path(move.intended_path) for move in moves if move.intended_path}
        intended: dict[tuple[RowKind, int], str] = {}
        for move in moves:
            if move.intended_path is None:
                path = self._free_path(move, taken)
                taken.add(path)
                intended[(move.kind, move.id)] = str(path)
        if intended:
            self._store.record_intended(intended)
        return [_with_intended(move, intended) for move in moves]

    def _free_path(self, move: PendingMove, taken: set[Path]) -> Path:
        folder = dated_folder(
            self._paths, move.destination, capture_time=move.capture_time, arrived=move.arrived_at
        )
        name = safe_filename(Path(move.source_path).name)
        return unique_destination(folder, name, reserved=taken)

    def _finish(self, move: PendingMove, *, resumed: bool) -> Path | None:
        """Move one file; returns where it now is, or None when it had already gone."""
        assert move.intended_path is not None
        source, destination = Path(move.source_path), Path(move.intended_path)
        # Only a move recorded before this round can be half-done; settling costs a listing of
        # the destination folder, which grows all day, so fresh moves skip it.
        if resumed:
            outcome = settle_move(source, destination, move.sha256)
        else:
            outcome = (
                SettleOutcome.NOT_STARTED if os.path.lexists(source) else SettleOutcome.MISSING
            )
        if outcome is SettleOutcome.NOT_STARTED:
            self._move(move, source, destination)
        elif outcome is SettleOutcome.DESTINATION_TAKEN:
            # Someone else put a different file at our name: pick another, record it, move.
            replacement = unique_destination(destination.parent, destination.name)
            self._store.record_intended({(move.kind, move.id): str(replacement)})
            self._move(move, source, replacement)
            destination = replacement
        elif outcome is SettleOutcome.MISSING:
            reason = "file disappeared from the inbox before it could be moved"
            logger.warning("%s: %s", source, reason)
            self._store.record_source_lost(move.kind, move.id, reason)
            return None
        self._after_move(move, destination)
        return destination

    def _move(self, move: PendingMove, source: Path, destination: Path) -> None:
        try:
            move_durably(source, destination)
        except OSError as err:
            if classify_move_error(err, source, destination).scope is Scope.DESTINATION:
                raise DestinationUnavailableError(
                    f"cannot move {source} to {destination}: {err.strerror}"
                ) from err
            raise

    def _after_move(self, move: PendingMove, destination: Path) -> None:
        root = destination_root(self._paths, move.destination)
        self._ownership.apply(destination, up_to=root)
        if move.destination is Destination.QUARANTINE:
            self._write_reason(move, destination)
        logger.info("%s -> %s (%s)", move.source_path, destination, move.destination)

    def _write_reason(self, move: PendingMove, destination: Path) -> None:
        sidecar = destination.with_name(destination.name + ".txt")
        if sidecar.exists():  # written before a crash: the move is being settled again
            self._notes_owed.pop(destination, None)
            return
        text = (
            f"file: {printable(move.source_path)}\n"  # the name may not be valid UTF-8
            f"quarantined: {move.reason or 'unknown reason'}\n"
            f"sha256: {move.sha256 or '-'}\n"
        )
        try:
            sidecar = write_sidecar(destination, text)
            self._ownership.apply(sidecar, up_to=sidecar.parent)
        except OSError as err:
            if destination not in self._notes_owed:  # once, not on every retry
                logger.error(
                    "%s: could not write the quarantine note, will retry: %s", destination, err
                )
            self._notes_owed[destination] = move
            return
        if self._notes_owed.pop(destination, None) is not None:
            logger.info("%s: quarantine note written on a later try", destination)

    def _retry_owed_notes(self) -> None:
        for destination, move in list(self._notes_owed.items()):
            if not os.path.lexists(destination):  # staff dealt with the file meanwhile
                del self._notes_owed[destination]
                continue
            self._write_reason(move, destination)


class RoutingLoop:
    """Runs the moves in a thread of their own, so fsyncs never hold up the model.

    The worker wakes it after each commit; intake's duplicates and rejects are picked up on
    its regular tick. A destination that refuses files pauses the moves and, through
    `blocked`, the worker's intake of new work.
    """

    def __init__(self, router: Router, *, retry_seconds: float, stop: threading.Event) -> None:
        self._router = router
        self._retry_seconds = retry_seconds
        self._stop = stop
        self._wake = threading.Event()
        self._blocked_until = 0.0  # monotonic

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self._blocked_until

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self._stop.is_set():
            if not self.blocked:
                self._round()
            self._wake.wait(timeout=_TICK_SECONDS)
            self._wake.clear()
        self._round()  # moves for what was committed last: quick, and saves a settle later

    def _round(self) -> None:
        try:
            summary = self._router.route_pending()
        except StoreUnavailable as err:
            logger.error("database unavailable, moves wait: %s", err)
            self._blocked_until = time.monotonic() + min(self._retry_seconds, 2.0)
            return
        if summary.waiting:
            self._blocked_until = time.monotonic() + self._retry_seconds


_TICK_SECONDS = 0.5


def _with_intended(move: PendingMove, intended: dict[tuple[RowKind, int], str]) -> PendingMove:
    path = intended.get((move.kind, move.id))
    if path is None:
        return move
    return PendingMove(**{**move.__dict__, "intended_path": path})
