"""Find frames in the verdict folders: watchdog events and a periodic scan, as hints only."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from daemon.config import Verdicts
from daemon.intake.names import NameFilter
from daemon.intake.scanner import scan_inbox
from daemon.storage.schema import VerdictValue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sighting:
    """A file seen in a verdict folder; `moved_from` is where it was when its move was seen."""

    path: Path
    verdict: VerdictValue
    moved_from: Path | None = None


def verdict_folders(review: Path, settings: Verdicts) -> dict[VerdictValue, Path]:
    """<review>/<folder>/<tiger> and <review>/<folder>/<not_tiger>, by the verdict each means."""
    root = review / settings.folder
    return {
        VerdictValue.TIGER: root / settings.tiger,
        VerdictValue.NOT_TIGER: root / settings.not_tiger,
    }


class VerdictFolders:
    """Watches the review folder for files arriving in the verdict folders, and scans those.

    The observer watches all of review, not only the verdict folders, so that a move from a
    review or audit folder is seen with its source path (no hashing needed to know the frame).
    Its handler only queues sightings: an exception in a watchdog handler kills the observer.
    """

    def __init__(
        self, review: Path, folders: Mapping[VerdictValue, Path], name_filter: NameFilter
    ) -> None:
        self._review = review
        self._folders = dict(folders)
        self._filter = name_filter
        self._lock = threading.Lock()
        self._queued: list[Sighting | Path] = []  # a Path: a folder moved in, to be scanned
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Create the verdict folders (staff need them there) and start watching."""
        for folder in self._folders.values():
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                logger.error("Cannot create verdict folder %s: %s", folder, err)
        self.keep_watching()

    def keep_watching(self) -> None:
        """(Re)start the observer when it is not running; scans cover what it missed."""
        if self._observer is not None and self._observer.is_alive():
            return
        self.stop()
        observer = Observer()
        observer.name = f"verdicts:{self._review}"  # "watch:" names the inbox watches
        try:
            observer.schedule(_Handler(self), os.fspath(self._review), recursive=True)
            observer.start()
        except Exception as err:  # whatever watchdog raises, the scans still find every frame
            logger.warning("Cannot watch %s for verdicts (%s); scanning only", self._review, err)
            observer.stop()
            return
        self._observer = observer

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def take(self) -> list[Sighting]:
        """Sightings from events since the last call (folders moved in are scanned here)."""
        with self._lock:
            queued, self._queued = self._queued, []
        found: list[Sighting] = []
        for item in queued:
            found.extend([item] if isinstance(item, Sighting) else self._scan_under(item))
        return found

    def scan(self) -> Iterator[Sighting]:
        """Every candidate file in the verdict folders, sub-folders (events, bursts) included."""
        for verdict, folder in self._folders.items():
            for path in scan_inbox(folder, self._filter):
                yield Sighting(path, verdict)

    def verdict_of(self, path: Path) -> VerdictValue | None:
        """The verdict a path's folder means, or None outside the verdict folders."""
        for verdict, folder in self._folders.items():
            if path.is_relative_to(folder) and path != folder:
                return verdict
        return None

    def queue(self, path: Path, moved_from: Path | None, *, is_directory: bool) -> None:
        verdict = self.verdict_of(path)
        if verdict is None or self._filter.is_ignored_name(path.name):
            return
        if not is_directory and not self._filter.accepts_file(path):
            return
        with self._lock:
            self._queued.append(path if is_directory else Sighting(path, verdict, moved_from))

    def _scan_under(self, folder: Path) -> list[Sighting]:
        verdict = self.verdict_of(folder)
        if verdict is None:
            return []
        return [Sighting(path, verdict) for path in scan_inbox(folder, self._filter)]


class _Handler(FileSystemEventHandler):
    """Passes file events in the verdict folders on as sightings; never raises."""

    def __init__(self, folders: VerdictFolders) -> None:
        super().__init__()
        self._folders = folders

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.dest_path:
            self._pass(event.dest_path, event.src_path, event.is_directory)

    def on_created(self, event: FileSystemEvent) -> None:
        self._pass(event.src_path, None, event.is_directory)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._pass(event.src_path, None, False)  # a copy finished: look at its content again

    def _pass(self, raw: bytes | str, raw_source: bytes | str | None, is_directory: bool) -> None:
        try:
            source = None if raw_source is None else Path(os.fsdecode(raw_source))
            self._folders.queue(Path(os.fsdecode(raw)), source, is_directory=is_directory)
        except Exception:
            logger.exception("Verdict folder event for %s could not be passed on", raw)
