"""Moves decided files out of the inboxes durably: intent recorded first, result after."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.beneath import FolderMissingError, UnsafePathError, folder_beneath
from daemon.config import Paths
from daemon.delivery.claim import (
    claim,
    claim_tag,
    give_back,
    leftover_claims,
    original_name,
    unclaim,
)
from daemon.delivery.destinations import destination_root, filing_folder
from daemon.delivery.event_filing import EventFiler
from daemon.delivery.fileops import ContentChangedError, Entry, move_entry, write_sidecar
from daemon.delivery.move_errors import Scope, classify_move_error
from daemon.delivery.move_retries import MoveRetries
from daemon.delivery.naming import safe_filename, unique_destination
from daemon.delivery.permissions import Ownership
from daemon.delivery.refile import settle_refiles
from daemon.delivery.setaside import EntryFailures
from daemon.delivery.settle import SettleOutcome, settle_entry
from daemon.hashing import sha256_file
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
        refile_retries: MoveRetries | None = None,
    ) -> None:
        self._store = store
        self._paths = paths
        self._ownership = ownership or Ownership()
        # One entry that will not move waits alone; see setaside.py.
        self._failures = failures or EntryFailures(store, first_delay=30.0, max_attempts=5)
        # Quarantine notes that could not be written (full disk), by quarantined file: the
        # reason is in the database either way, but staff read it beside the file.
        self._notes_owed: dict[Path, PendingMove] = {}
        self._inboxes = tuple(inbox.path for inbox in paths.inbox)
        # Told each inbox path that a closed row no longer holds, once committed: a file
        # published at that name meanwhile was passed over by intake as "still waiting".
        self.on_released: Callable[[Path], None] | None = None
        self._released: list[Path] = []
        self.failed_attempts = 0  # entries' own failed tries: the daemon at work, not hung
        self._events = EventFiler(store, paths, self._ownership, refile_retries)

    def settle_refiles(self) -> int:
        """At start-up: finish the moves of filed frames a crash interrupted (see refile.py)."""
        return settle_refiles(self._store, self._paths, self._ownership)

    def file_events(self) -> int:
        """Frames filed before their event changed go to the event's folder; returns waiting.

        A refile left open by a database hiccup mid-move is settled first, so its frame is
        not taken for one that staff moved away.
        """
        try:
            self.settle_refiles()
        except OSError as err:
            logger.error("cannot settle the moves of filed frames now, will retry: %s", err)
            return 1
        return self._events.file_events()

    def route_pending(self) -> RouteSummary:
        """Settle or perform every recorded move; stops at the first unavailable destination."""
        self._retry_owed_notes()
        moves = self._store.pending_moves()
        if not moves:
            return RouteSummary(0, 0)
        resumed = {(move.kind, move.id) for move in moves if move.intended_path is not None}
        try:
            moves = self._assign_destinations(moves)
        except OSError as err:
            # A destination folder that cannot even be looked into (a plain file now, EIO):
            # every file waits, as for any destination that refuses them.
            logger.error("cannot choose destinations: %s; %d file(s) wait", err, len(moves))
            return RouteSummary(0, len(moves))
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
                    self.failed_attempts += 1
                    self._failures.failed(move, err)
                    continue
                self._failures.moved(move)
                if destination is not None:
                    finished.append((move.kind, move.id, str(destination)))
        finally:
            # One commit for the round: a crash before it leaves rows whose files are already
            # in place, which start-up settlement recognises and closes.
            self._store.record_moved_many(finished)
            self._release([Path(move.source_path) for move in moves])
        return RouteSummary(len(finished), 0)

    def return_leftover_claims(self) -> int:
        """At start-up, after route_pending: put claims no pending move owns back in the inbox.

        Such a claim holds content that was found changed after classification and whose row
        was closed just before a crash: it is a new arrival. Returns how many went back.
        """
        owned = {_tag(move) for move in self._store.pending_moves()}
        returned = 0
        for folder, name, folder_path in leftover_claims(self._inboxes):
            original = original_name(name)
            if claim_tag(name) in owned or original is None:
                continue
            try:
                give_back(Entry(name, folder, str(folder_path / name)), original)
            except OSError as err:
                logger.error("%s: could not return it to the inbox: %s", folder_path / name, err)
                continue
            returned += 1
        return returned

    def _release(self, sources: list[Path]) -> None:
        released, self._released = self._released + sources, []
        if self.on_released is None:
            return
        for source in released:
            self.on_released(source)

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
        folder = filing_folder(
            self._paths,
            move.destination,
            capture_time=move.capture_time,
            arrived=move.arrived_at,
            deployment=move.deployment,
            event_id=move.event_id,
            event_start=move.event_start,
        )
        return self._free_name(move, folder, safe_filename(Path(move.source_path).name), taken)

    @staticmethod
    def _free_name(
        move: PendingMove, folder: Path, name: str, taken: set[Path] | None = None
    ) -> Path:
        # A quarantined file's note is "<its name>.txt": a note left by an earlier file (whose
        # image staff removed) makes the name taken, so no file ever shows another's note.
        note = ".txt" if move.destination is Destination.QUARANTINE else None
        return unique_destination(folder, name, reserved=taken or set(), companion_suffix=note)

    def _finish(self, move: PendingMove, *, resumed: bool) -> Path | None:
        """Move one file; returns where it now is, or None when it had already gone."""
        assert move.intended_path is not None
        source, destination = Path(move.source_path), Path(move.intended_path)
        try:
            with folder_beneath(source, self._inboxes) as folder:
                claimed = claim(folder, source.name, _tag(move), shown=str(source))
                if claimed is None:
                    return self._unclaimed(move, destination, resumed=resumed)
                return self._finish_claimed(move, claimed, destination, resumed=resumed)
        except UnsafePathError as err:
            # Never through a link: what lies at the end of it is not the inbox's to move.
            return self._source_lost(move, f"left where it is: {err.strerror}")
        except FolderMissingError:
            return self._unclaimed(move, destination, resumed=resumed)

    def _unclaimed(self, move: PendingMove, destination: Path, *, resumed: bool) -> Path | None:
        """Nothing at the inbox name nor claimed: moved before a crash, or gone."""
        if (
            resumed
            and settle_entry(Entry.at(Path(move.source_path)), destination, move.sha256)
            is SettleOutcome.ALREADY_MOVED
        ):
            self._after_move(move, destination)
            return destination
        return self._source_lost(move, "file disappeared from the inbox before it could be moved")

    def _finish_claimed(
        self, move: PendingMove, claimed: Entry, destination: Path, *, resumed: bool
    ) -> Path | None:
        # Only a move recorded before this round can be half-done; settling costs a listing of
        # the destination folder, which grows all day, so fresh moves skip it.
        outcome = (
            settle_entry(claimed, destination, move.sha256)
            if resumed
            else SettleOutcome.NOT_STARTED
        )
        try:
            if outcome is SettleOutcome.NOT_STARTED:
                self._move(move, claimed, destination)
            elif outcome is SettleOutcome.DESTINATION_TAKEN:
                destination = self._destination_taken(move, claimed, destination)
        except ContentChangedError as err:
            return self._content_changed(move, claimed, err)
        except BaseException:
            unclaim(claimed, Path(move.source_path).name)  # the file waits at its own name
            raise
        self._after_move(move, destination)
        return destination

    def _destination_taken(self, move: PendingMove, claimed: Entry, destination: Path) -> Path:
        if move.sha256 is not None and _holds(destination, move.sha256):
            # Moved before a crash; what is claimed now was published at the name since.
            give_back(claimed, Path(move.source_path).name)
            return destination
        # Someone else put a different file at our name: pick another, record it, move.
        replacement = self._free_name(move, destination.parent, destination.name)
        self._store.record_intended({(move.kind, move.id): str(replacement)})
        self._move(move, claimed, replacement)
        return replacement

    def _content_changed(self, move: PendingMove, claimed: Entry, err: OSError) -> Path | None:
        """Other bytes than those classified: never filed under that decision."""
        reason = "content changed after it was classified; returned to the inbox as new"
        logger.warning("%s: %s (%s)", move.source_path, reason, err.strerror)
        self._store.record_source_lost(move.kind, move.id, reason)
        try:
            give_back(claimed, Path(move.source_path).name)
        except OSError as failure:  # the next start-up returns it
            logger.error("%s: could not return it to the inbox: %s", claimed.shown, failure)
        return None

    def _source_lost(self, move: PendingMove, reason: str) -> Path | None:
        logger.warning("%s: %s", move.source_path, reason)
        self._store.record_source_lost(move.kind, move.id, reason)
        return None

    def _move(self, move: PendingMove, claimed: Entry, destination: Path) -> None:
        try:
            move_entry(claimed, destination, sha256=move.sha256)
        except ContentChangedError:
            raise
        except OSError as err:
            source = Path(move.source_path)
            if classify_move_error(err, source, destination).scope is Scope.DESTINATION:
                raise DestinationUnavailableError(
                    f"cannot move {move.source_path} to {destination}: {err.strerror}"
                ) from err
            raise

    def _after_move(self, move: PendingMove, destination: Path) -> None:
        root = destination_root(self._paths, move.destination)
        self._ownership.apply(destination, up_to=root)
        if move.destination is Destination.QUARANTINE:
            self._write_reason(move, destination)
        logger.info("%s -> %s (%s)", move.source_path, destination, move.destination)

    def _write_reason(self, move: PendingMove, destination: Path) -> None:
        text = (
            f"file: {printable(move.source_path)}\n"  # the name may not be valid UTF-8
            f"quarantined: {move.reason or 'unknown reason'}\n"
            f"sha256: {move.sha256 or '-'}\n"
        )
        # The name was chosen with "<name>.txt" free (_free_name), so a note there now is this
        # file's own, written before a crash: the move is being settled again.
        if os.path.lexists(destination.with_name(destination.name + ".txt")):
            self._notes_owed.pop(destination, None)
            return
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
        self._paused_rounds = 0

    @property
    def blocked(self) -> bool:
        return time.monotonic() < self._blocked_until

    def tries(self) -> int:
        """Moves tried and refused so far (paused rounds, entries' failed tries).

        The stall watch counts these as signs of life: a daemon waiting for a full disk or an
        entry's backoff is working, and a restart would only reload the model to wait again.
        """
        return self._paused_rounds + self._router.failed_attempts

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
            if not summary.waiting:
                summary = RouteSummary(summary.moved, self._router.file_events())
        except StoreUnavailable as err:
            logger.error("database unavailable, moves wait: %s", err)
            self._blocked_until = time.monotonic() + min(self._retry_seconds, 2.0)
            return
        if summary.waiting:
            self._paused_rounds += 1
            self._blocked_until = time.monotonic() + self._retry_seconds


_TICK_SECONDS = 0.5


def _tag(move: PendingMove) -> str:
    """The row's part of its claim name: "i12" for image 12, "d3", "r7"."""
    return f"{move.kind.value[0]}{move.id}"


def _holds(path: Path, sha256: str) -> bool:
    try:
        return sha256_file(path) == sha256
    except OSError:
        return False


def _with_intended(move: PendingMove, intended: dict[tuple[RowKind, int], str]) -> PendingMove:
    path = intended.get((move.kind, move.id))
    if path is None:
        return move
    return PendingMove(**{**move.__dict__, "intended_path": path})
