"""Turn "look at this path" hints into paths that have stayed unchanged for a quiet period."""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class StablePath:
    path: Path
    kind: Readiness
    signature: FileSignature


@dataclass
class _Pending:
    """One hinted path; `signature` is None until take_stable has looked at it once."""

    signature: FileSignature | None = None
    kind: Readiness | None = None
    quiet_since: float = 0.0
    last_error: str | None = None


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
    `quiet_seconds == 0`. Timers use `clock` (monotonic by default) because station wall clocks
    jump; should an injected clock ever run backwards, the timer restarts from the new reading
    rather than waiting for the old one to come round again.
    """

    def __init__(
        self, quiet_seconds: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if quiet_seconds < 0:
            raise ValueError(f"quiet_seconds must be >= 0, got {quiet_seconds}")
        self._quiet_seconds = quiet_seconds
        self._clock = clock
        self._pending: dict[Path, _Pending] = {}
        self._lock = threading.Lock()
        # Serialises whole take_stable passes so two callers never judge the same path at once.
        self._take_lock = threading.Lock()

    def note(self, path: Path) -> None:
        """Record a hint. Cheap and I/O-free; re-noting a pending path changes nothing."""
        with self._lock:
            self._pending.setdefault(path, _Pending())

    def forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def take_stable(self) -> list[StablePath]:
        """Look at every pending path; return (and stop tracking) those that are quiet."""
        with self._take_lock:
            with self._lock:
                snapshot = list(self._pending.items())
            stable = [
                found for path, entry in snapshot if (found := self._judge(path, entry)) is not None
            ]
        return sorted(stable, key=lambda found: found.path)

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
            entry.signature, entry.kind, entry.quiet_since = signature, kind, now
            return None
        if now - entry.quiet_since < self._quiet_seconds:
            return None
        del self._pending[path]
        return StablePath(path=path, kind=kind, signature=signature)
