"""Where a destination lives on disk: its root folder, then the capture (or arrival) date."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from daemon.config import Paths
from daemon.outcomes import Destination


def destination_root(paths: Paths, destination: Destination) -> Path:
    roots = {
        Destination.REVIEW: paths.review,
        Destination.UNCERTAIN: paths.uncertain,
        Destination.ARCHIVE: paths.archive,
        Destination.DUPLICATES: paths.duplicates,
        Destination.QUARANTINE: paths.quarantine,
    }
    return roots[destination]


def dated_folder(
    paths: Paths, destination: Destination, *, capture_time: datetime | None, arrived: datetime
) -> Path:
    """`<root>/<YYYY-MM-DD>`: the camera's capture date when known, else the local arrival date.

    Staff look for "the night of the 12th", so the camera's own date wins even when its clock
    may be off; the arrival date is the only honest fallback.
    """
    day: date = capture_time.date() if capture_time is not None else arrived.astimezone().date()
    return destination_root(paths, destination) / day.isoformat()
