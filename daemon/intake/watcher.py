"""Watch inbox folders with watchdog and pass each event on as a hint; never decides anything."""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from daemon.intake.names import NameFilter
from daemon.intake.stability import Hint

WriteStateHint = Callable[[Path, Hint], None]

logger = logging.getLogger(__name__)

# How long stop() and a repair wait for an observer thread; a handler blocked in on_hint must
# not hang shutdown forever.
_JOIN_TIMEOUT_S = 5.0
# inotify ran out of watches (max_user_watches) or instances: polling still works.
_INOTIFY_EXHAUSTED = frozenset({errno.ENOSPC, errno.EMFILE})

FolderIdentity = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class WatchedInbox:
    """One inbox folder; `polling` for network mounts, where inotify misses other hosts' writes."""

    path: Path
    polling: bool = False


class _HintHandler(FileSystemEventHandler):
    """Turns events under one inbox into on_hint calls. Never raises: an exception escaping a
    watchdog handler silently kills the observer thread.

    Directory hints are sent for created and moved-in folders (a DCIM tree arriving at once) but
    not for "directory modified", which fires on the parent for every file change and would turn
    each new file into a rescan of its whole folder. With `on_write_state` (inotify watches
    only: polling sees no closes), a file's writes and its close go there as WRITTEN and CLOSED.
    """

    def __init__(
        self,
        root: Path,
        on_hint: Callable[[Path], None],
        name_filter: NameFilter,
        on_write_state: WriteStateHint | None = None,
    ) -> None:
        super().__init__()
        self._root = root
        self._on_hint = on_hint
        self._filter = name_filter
        self._on_write_state = on_write_state

    def on_created(self, event: FileSystemEvent) -> None:
        self._hint(event.src_path, is_directory=event.is_directory)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._hint(event.src_path, is_directory=False, hint=Hint.WRITTEN)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._hint(event.src_path, is_directory=False, hint=Hint.CLOSED)

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.dest_path:  # empty when a file left the inbox
            self._hint(event.dest_path, is_directory=event.is_directory)

    def _hint(self, raw_path: bytes | str, *, is_directory: bool, hint: Hint = Hint.LOOK) -> None:
        try:
            path = Path(os.fsdecode(raw_path))
            if not self._wanted(path, is_directory=is_directory):
                return
            if hint is Hint.LOOK or self._on_write_state is None:
                self._on_hint(path)
            else:
                self._on_write_state(path, hint)
        except Exception:
            logger.exception("Watch event for %s could not be passed on", os.fsdecode(raw_path))

    def _wanted(self, path: Path, *, is_directory: bool) -> bool:
        """Name rules only (no I/O): a symlink is judged by its own name, never its target."""
        if self._inside_ignored_folder(path):
            return False
        if is_directory:
            return not self._filter.is_ignored_name(path.name)
        return self._filter.accepts_file(path)

    def _inside_ignored_folder(self, path: Path) -> bool:
        """Drop events from inside @eaDir, __MACOSX, ...: the scanner never enters them either."""
        try:
            folders = path.parent.relative_to(self._root).parts
        except ValueError:
            return False
        return any(self._filter.is_ignored_name(folder) for folder in folders)


@dataclass
class _ActiveWatch:
    observer: BaseObserver
    identity: FolderIdentity


def _folder_identity(path: Path) -> tuple[FolderIdentity | None, str]:
    """(device, inode) of the inbox folder, or None and the reason it cannot be watched."""
    try:
        result = os.lstat(path)
    except OSError as err:
        return None, err.strerror or str(err)
    if not stat.S_ISDIR(result.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(result.st_mode) else "not a folder"
        return None, f"it is {kind}; inboxes must be real folders"
    return (result.st_dev, result.st_ino), ""


def _fault(active: _ActiveWatch, identity: FolderIdentity | None) -> str | None:
    """What is wrong with a running watch, or None when it is sound."""
    observer = active.observer
    if not observer.is_alive() or observer.stopped_event.is_set():
        return "observer thread died"
    if not observer.emitters or any(
        not emitter.is_alive() or emitter.stopped_event.is_set() for emitter in observer.emitters
    ):
        return "watch stopped (folder deleted or unreadable?)"
    if identity is None:
        return "inbox folder disappeared"
    if identity != active.identity:
        return "inbox folder was replaced (deleted or moved away, then re-created)"
    return None


def _stop_observers(observers: Sequence[BaseObserver]) -> None:
    """Stop all first, then join with one shared deadline, so shutdown time stays bounded."""
    for observer in observers:
        observer.stop()
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    for observer in observers:
        if observer.is_alive():
            observer.join(timeout=max(0.0, deadline - time.monotonic()))
        if observer.is_alive():
            logger.warning(
                "Watch observer %s did not stop within %.0f s", observer.name, _JOIN_TIMEOUT_S
            )


class InboxWatcher:
    """One watchdog observer per inbox, each turning events into `on_hint(path)` calls.

    Thread-safe: `check_health` may run on a scheduler thread while `stop` runs on the main one.
    Whenever a watch is (re)established, including at start, `on_hint(inbox root)` asks the
    caller to rescan that inbox, since files may have landed while nothing was watching.
    `on_write_state`, when given, hears of writes and closes on inotify watches (see Hint).
    """

    def __init__(
        self,
        inboxes: Sequence[WatchedInbox],
        on_hint: Callable[[Path], None],
        name_filter: NameFilter,
        *,
        poll_interval: float = 2.0,
        on_write_state: WriteStateHint | None = None,
    ) -> None:
        self._inboxes = tuple(inboxes)
        self._on_hint = on_hint
        self._on_write_state = on_write_state
        self._filter = name_filter
        self._poll_interval = poll_interval
        self._active: dict[Path, _ActiveWatch] = {}
        self._running = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Watch every inbox; a missing one is logged and retried by check_health."""
        with self._lock:
            if self._running:
                raise RuntimeError("InboxWatcher already started")
            self._running = True
            established: list[Path] = []
            for inbox in self._inboxes:
                problem = self._try_establish(inbox)
                if problem is None:
                    established.append(inbox.path)
                else:
                    logger.error("Cannot watch inbox %s: %s", inbox.path, problem)
        self._hint_roots(established)

    def stop(self) -> None:
        """Stop and join every observer (bounded wait). Safe to call more than once."""
        with self._lock:
            self._running = False
            observers = [active.observer for active in self._active.values()]
            self._active.clear()
        _stop_observers(observers)

    def check_health(self) -> list[str]:
        """Find and repair broken watches; returns one line per problem (empty when all fine).

        A missing inbox is reported on every call until it appears and is watched.
        """
        problems: list[str] = []
        reestablished: list[Path] = []
        with self._lock:
            if not self._running:
                return []
            for inbox in self._inboxes:
                problem = self._check_inbox(inbox)
                if problem is not None:
                    problems.append(problem)
                    if inbox.path in self._active:
                        reestablished.append(inbox.path)
        for problem in problems:
            logger.warning("Watch repair: %s", problem)
        self._hint_roots(reestablished)
        return problems

    def is_healthy(self) -> bool:
        """True when running and every inbox has a sound watch; repairs nothing."""
        with self._lock:
            if not self._running:
                return False
            for inbox in self._inboxes:
                active = self._active.get(inbox.path)
                identity, _ = _folder_identity(inbox.path)
                if active is None or _fault(active, identity) is not None:
                    return False
            return True

    def _check_inbox(self, inbox: WatchedInbox) -> str | None:
        """Repair one inbox's watch if needed; returns the problem found, or None."""
        identity, reason = _folder_identity(inbox.path)
        active = self._active.get(inbox.path)
        fault = None if active is None else _fault(active, identity)
        if active is not None:
            if fault is None:
                return None
            del self._active[inbox.path]
            _stop_observers([active.observer])
        found = f"{inbox.path}: {fault}" if fault else f"{inbox.path}: inbox is not being watched"
        if identity is None:
            return f"{found}; cannot watch it yet ({reason}), will retry"
        failure = self._try_establish(inbox)
        if failure is not None:
            return f"{found}; cannot watch it yet ({failure}), will retry"
        return f"{found}; watch re-established"

    def _try_establish(self, inbox: WatchedInbox) -> str | None:
        """Start watching one inbox; returns why it failed, or None on success."""
        # Identity is read before scheduling: if the folder is swapped in between, the next
        # check sees a mismatch and re-establishes, which is the safe direction.
        identity, reason = _folder_identity(inbox.path)
        if identity is None:
            return reason
        try:
            observer = self._start_with_fallback(inbox)
        except Exception as err:  # whatever watchdog raises, check_health must go on
            logger.debug("Starting a watch on %s failed", inbox.path, exc_info=True)
            return str(err) if isinstance(err, OSError) else repr(err)
        self._active[inbox.path] = _ActiveWatch(observer=observer, identity=identity)
        logger.info("Watching inbox %s", inbox.path)
        return None

    def _start_with_fallback(self, inbox: WatchedInbox) -> BaseObserver:
        """inotify as configured, or polling once the kernel's inotify limits are exhausted."""
        try:
            return self._start_observer(inbox, polling=inbox.polling)
        except OSError as err:
            if inbox.polling or err.errno not in _INOTIFY_EXHAUSTED:
                raise
            logger.warning(
                "inotify limit reached watching %s (%s); polling it every %.1f s instead",
                inbox.path,
                err.strerror,
                self._poll_interval,
            )
            return self._start_observer(inbox, polling=True)

    def _start_observer(self, inbox: WatchedInbox, *, polling: bool) -> BaseObserver:
        observer: BaseObserver = (
            PollingObserver(timeout=self._poll_interval) if polling else Observer()
        )
        observer.name = f"watch:{inbox.path}"
        writes = None if polling else self._on_write_state  # polling never sees a close
        handler = _HintHandler(inbox.path, self._on_hint, self._filter, writes)
        observer.schedule(handler, os.fspath(inbox.path), recursive=True)
        try:
            observer.start()
        except Exception:
            observer.stop()  # release the emitters that did start
            raise
        return observer

    def _hint_roots(self, roots: Sequence[Path]) -> None:
        """Called without the lock held: on_hint may take its own locks."""
        for root in roots:
            try:
                self._on_hint(root)
            except Exception:
                logger.exception("Rescan hint for inbox %s could not be passed on", root)
