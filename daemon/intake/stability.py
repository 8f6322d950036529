"""Turn "look at this path" hints into paths that have stayed unchanged for a quiet period."""

from __future__ import annotations

import errno
import heapq
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

logger = logging.getLogger(__name__)

# A path that vanished, or whose parent became a file, is simply gone.
_GONE_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})


@dataclass(frozen=True)
class FileSignature:
    """What must stay the same between two looks for a path to count as quiet."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def from_stat(cls, result: os.stat_result) -> FileSignature:
        return cls(
            size=result.st_size,
            mtime_ns=result.st_mtime_ns,
            inode=result.st_ino,
            device=result.st_dev,
        )


class Readiness(StrEnum):
    """What kind of thing a quiet path is; only FILE is worth decoding."""

    FILE = "file"
    LINK = "link"
    OTHER = "other"


class Hint(StrEnum):
    """What an event says about a path beyond "look at it"; only inotify tells WRITTEN/CLOSED."""

    LOOK = "look"  # created, moved in, found by a scan: judged by the quiet period
    WRITTEN = "written"  # data written (IN_MODIFY): a writer holds it open until CLOSED
    CLOSED = "closed"  # the writer closed it (IN_CLOSE_WRITE): quiet from now on


@dataclass(frozen=True)
class StablePath:
    path: Path
    kind: Readiness
    signature: FileSignature
    # Bookkeeping, not identity: when this signature was first seen (the tracker's clock), and
    # whether it was taken only because the incomplete grace ran out.
    quiet_since: float = field(default=0.0, compare=False)
    waited_out: bool = field(default=False, compare=False)


@dataclass
class _Pending:
    """One hinted path; `signature` is None until take_stable has looked at it once."""

    signature: FileSignature | None = None
    kind: Readiness | None = None
    quiet_since: float = 0.0
    last_error: str | None = None
    writer_open: bool = False  # a write was seen and no close since (inotify inboxes)
    incomplete: bool = False  # intake found this signature's data cut short


def _held(entry: _Pending) -> bool:
    return entry.writer_open or entry.incomplete


def _kind_of(mode: int) -> Readiness | None:
    if stat.S_ISDIR(mode):
        return None
    if stat.S_ISREG(mode):
        return Readiness.FILE
    if stat.S_ISLNK(mode):
        return Readiness.LINK
    return Readiness.OTHER


class StabilityTracker:
    """Decide when hinted paths have been quiet long enough. Thread-safe.

    A path is stable when take_stable sees the same kind and signature as at its previous look,
    and at least `quiet_seconds` have passed on the monotonic clock since that signature was first
    seen. The first look only starts the timer, so every path needs two looks, even with
    `quiet_seconds == 0`. A path held (a writer still has it open, or `hold_incomplete` said its
    data is cut short) waits `incomplete_grace_seconds` of quiet instead. Timers use `clock`
    (monotonic by default) because station wall clocks jump; should an injected clock ever run
    backwards, the timer restarts from the new reading rather than waiting for the old one to
    come round again.
    """

    def __init__(
        self,
        quiet_seconds: float,
        *,
        incomplete_grace_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        on_first_look: Callable[[], None] | None = None,
    ) -> None:
        if quiet_seconds < 0 or incomplete_grace_seconds < 0:
            raise ValueError(
                f"quiet_seconds and incomplete_grace_seconds must be >= 0,"
                f" got {quiet_seconds} and {incomplete_grace_seconds}"
            )
        self._quiet_seconds = quiet_seconds
        self._grace_seconds = max(quiet_seconds, incomplete_grace_seconds)
        self._clock = clock
        # Called after a pass that saw files begin their quiet period (work ahead may start).
        self._on_first_look = on_first_look
        self._first_looks = 0
        self._pending: dict[Path, _Pending] = {}
        self._next_due = math.inf  # the first due time (see seconds_to_due)
        self._noted_due = math.inf  # the first due time noted while a pass looks
        self._lock = threading.Lock()
        # Serialises whole take_stable passes so two callers never judge the same path at once.
        self._take_lock = threading.Lock()

    def note(self, path: Path, hint: Hint = Hint.LOOK) -> None:
        """Record a hint. Cheap and I/O-free; re-noting a pending path with LOOK changes nothing.

        WRITTEN holds the path until CLOSED; CLOSED restarts its quiet period, so the file is
        taken only once it has stayed quiet after the writer closed it.
        """
        with self._lock:
            entry = self._pending.setdefault(path, _Pending())
            if hint is Hint.WRITTEN:
                entry.writer_open = True
            elif hint is Hint.CLOSED:
                entry.writer_open = False
                entry.signature = None
            self._noted(entry)

    def hold_incomplete(self, item: StablePath) -> None:
        """Track `item` again: its data looked cut short, so it waits the incomplete grace.

        The grace counts from when this signature was first seen; any change to the file ends
        the hold and the new data is judged afresh. A newer hint for the path wins.
        """
        with self._lock:
            if item.path not in self._pending:
                self._pending[item.path] = _Pending(
                    item.signature, item.kind, item.quiet_since, incomplete=True
                )
                self._noted(self._pending[item.path])

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def seconds_to_due(self) -> float | None:
        """How long until a pending path is next worth a look: 0 for one not looked at yet,
        else until the first quiet period (or grace) runs out; None with nothing due. Paths
        that could not be looked at wait for the next full pass. O(1): the intake thread asks
        before every wait, with thousands of paths pending in a big drop."""
        with self._lock:
            due = self._next_due
        return None if due == math.inf else max(0.0, due - self._clock())

    def quieting(
        self, limit: int, *, skip: Callable[[Path, FileSignature], bool]
    ) -> list[tuple[Path, FileSignature]]:
        """Up to `limit` files in their quiet period, the soonest due first, as last looked at:
        regular files with no writer holding them and data not found cut short, and not
        `skip`ped. For work done ahead (daemon/speculation.py): none is promised to be taken
        as it is."""
        with self._lock:
            found = [
                (self._due_at(entry), path, entry.signature)
                for path, entry in self._pending.items()
                if entry.signature is not None
                and entry.kind is Readiness.FILE
                and entry.last_error is None
                and not _held(entry)
                and not skip(path, entry.signature)
            ]
        return [(path, signature) for _, path, signature in heapq.nsmallest(limit, found)]

    def still_quiet(self, path: Path, signature: FileSignature) -> bool:
        """Whether `path` is still pending, as last looked at (`quieting` listed it so)."""
        with self._lock:
            entry = self._pending.get(path)
            return entry is not None and entry.signature == signature and not _held(entry)

    def take_stable(self, *, due_only: bool = False) -> list[StablePath]:
        """Look at pending paths; return (and stop tracking) those that are quiet.

        `due_only` looks only at the paths seconds_to_due counts (new ones, and those whose
        wait has run out), so that a pass woken by a hint costs no lstat of every other path.
        """
        with self._take_lock:
            first_looks = self._first_looks
            snapshot, later = self._snapshot(due_only)
            stable = [
                found for path, entry in snapshot if (found := self._judge(path, entry)) is not None
            ]
            with self._lock:
                looked = (entry for path, entry in snapshot if self._pending.get(path) is entry)
                self._next_due = min(later, self._noted_due, *map(self._due_at, looked))
            if self._first_looks != first_looks and self._on_first_look is not None:
                self._on_first_look()
        return sorted(stable, key=lambda found: found.path)

    def _snapshot(self, due_only: bool) -> tuple[list[tuple[Path, _Pending]], float]:
        """The paths to look at, and the first due time among the others, in one pass."""
        snapshot, later = [], math.inf
        with self._lock:
            now = self._clock()
            self._noted_due = math.inf  # from here on, note() keeps what it adds
            for path, entry in self._pending.items():
                due = self._due_at(entry)
                if due <= now or not due_only:
                    snapshot.append((path, entry))
                else:
                    later = min(later, due)
        return snapshot, later

    def _noted(self, entry: _Pending) -> None:
        """A path noted or held anew: it may be due before anything taken into account."""
        due = self._due_at(entry)
        self._next_due = min(self._next_due, due)
        self._noted_due = min(self._noted_due, due)

    def _due_at(self, entry: _Pending) -> float:
        if entry.last_error is not None:
            return math.inf
        if entry.signature is None:
            return -math.inf
        return entry.quiet_since + (self._grace_seconds if _held(entry) else self._quiet_seconds)

    def _judge(self, path: Path, entry: _Pending) -> StablePath | None:
        """lstat one path outside the lock (links not followed), then update it under the lock."""
        try:
            result = os.lstat(path)
        except OSError as err:
            self._on_lstat_error(path, entry, err)
            return None
        kind = _kind_of(result.st_mode)
        now = self._clock()
        with self._lock:
            if self._pending.get(path) is not entry:
                return None  # forgotten meanwhile; a later note() made a fresh entry
            if kind is None:
                logger.debug("Dropped hint for %s: it is a folder, scanned separately", path)
                del self._pending[path]
                return None
            return self._observe(path, entry, kind, FileSignature.from_stat(result), now)

    def _on_lstat_error(self, path: Path, entry: _Pending, err: OSError) -> None:
        with self._lock:
            if self._pending.get(path) is not entry:
                return
            if err.errno in _GONE_ERRNOS:
                logger.debug("Dropped hint for %s: it no longer exists", path)
                del self._pending[path]
                return
            reason = f"{err.strerror} (errno {err.errno})"
            if entry.last_error != reason:  # once per distinct error, not on every pass
                logger.warning("Cannot check %s, will retry: %s", path, reason)
            entry.last_error = reason

    def _observe(
        self, path: Path, entry: _Pending, kind: Readiness, signature: FileSignature, now: float
    ) -> StablePath | None:
        """Restart the timer on any change (or a clock that ran backwards); else test the wait."""
        entry.last_error = None
        unchanged = entry.signature == signature and entry.kind == kind
        if not unchanged or now < entry.quiet_since:
            self._first_looks += entry.signature is None
            entry.signature, entry.kind, entry.quiet_since = signature, kind, now
            entry.incomplete = False  # new data: judged afresh
            return None
        held = _held(entry)
        if now < self._due_at(entry):  # the same sum as seconds_to_due's (review hX6: float)
            return None
        del self._pending[path]
        if entry.writer_open:
            logger.warning(
                "%s: no close event in %.0f s of quiet after a write; taking it as it is",
                path,
                self._grace_seconds,
            )
        return StablePath(path, kind, signature, entry.quiet_since, waited_out=held)
