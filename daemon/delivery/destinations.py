"""Where a destination lives on disk: its root folder, then the capture (or arrival) date."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from daemon.config import Paths
from daemon.delivery.naming import safe_filename
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


def filing_folder(
    paths: Paths,
    destination: Destination,
    *,
    capture_time: datetime | None,
    arrived: datetime,
    deployment: str | None = None,
    event_id: int | None = None,
    event_start: datetime | None = None,
) -> Path:
    """Where a classified frame is filed, by deployment and event (README "Destination layout").

    A frame without a deployment keeps `<root>/<date>`. With one: review and uncertain frames
    go to `<root>/<event's first date>/<deployment>/event-<id>`, so an event's frames lie
    together; archived ones to `<root>/<date>/<deployment>`.
    """
    if deployment is None or destination not in _BY_DEPLOYMENT:
        return dated_folder(paths, destination, capture_time=capture_time, arrived=arrived)
    parts = [safe_filename(part) for part in deployment.split("/") if part]
    if destination is Destination.ARCHIVE or event_id is None:
        folder = dated_folder(paths, destination, capture_time=capture_time, arrived=arrived)
        return folder.joinpath(*parts)
    start = event_start if event_start is not None else capture_time
    folder = dated_folder(paths, destination, capture_time=start, arrived=arrived)
    return folder.joinpath(*parts, f"event-{event_id}")


_BY_DEPLOYMENT = frozenset({Destination.REVIEW, Destination.UNCERTAIN, Destination.ARCHIVE})
