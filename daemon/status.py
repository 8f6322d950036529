"""Summarises the queue for `tigerwatch status`: counts, backlog and its drain, last activity."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from daemon.progress import stall_from_records
from daemon.storage.schema import printable, utcnow
from daemon.storage.store import Store

# Long enough to smooth a batch's burst, short enough to follow a card being copied in.
DRAIN_WINDOW_MINUTES = 10
# The shortest span a rate is taken over: the first batches of a drain come in bursts.
MIN_DRAIN_MINUTES = 1.0


@dataclass(frozen=True)
class StatusReport:
    images_by_state: dict[str, int]
    queue_depth: int  # images waiting to be classified
    moves_waiting: int  # duplicates and rejects not yet out of the inbox
    oldest_waiting_seconds: float | None
    last_processed_at: str | None  # ISO 8601, UTC
    today: dict[str, int]  # decisions since local midnight
    progress: str  # "ok", or why the queue counts as stalled
    stuck: list[dict[str, str]]  # entries that cannot be moved: path, reason, since
    drain_window_minutes: int
    drained_in_window: int  # entries that left the inboxes in the window
    drain_per_minute: float  # over drain_minutes: since the first entry in the window left
    drain_minutes: float
    backlog: int  # every entry still in an inbox (stuck ones excluded: they wait for a person)
    eta_seconds: float | None  # backlog / drain rate; None when nothing drains or nothing waits
    waiting_by_inbox: dict[str, int]
    last_error: dict[str, str] | None  # at, path, reason
    watchdog: str  # "sent when systemd asks", or why the daemon withholds it

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def gather_status(
    store: Store,
    *,
    now: datetime | None = None,
    stall_seconds: float = 300.0,
    inboxes: tuple[Path, ...] = (),
) -> StatusReport:
    now = now or utcnow()
    local_midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    counts = store.counts_by_state()
    oldest = store.oldest_queued_since()
    last = store.last_done_at()
    stall = stall_from_records(store.queue_progress(), now, stall_seconds)
    stuck_entries = sorted(store.stuck_moves(), key=lambda entry: entry.since)
    stuck = [
        {"path": printable(entry.source_path), "reason": entry.reason, "since": _iso(entry.since)}
        for entry in stuck_entries
    ]
    stuck_paths = {entry.source_path for entry in stuck_entries}
    waiting = [path for path in store.waiting_paths() if path not in stuck_paths]
    drained, minutes = _drain(store, now)
    return StatusReport(
        images_by_state={state: counts.get(state, 0) for state in ("queued", "routing", "done")},
        queue_depth=counts.get("queued", 0),
        moves_waiting=store.pending_move_count() + counts.get("routing", 0),
        oldest_waiting_seconds=(now - oldest).total_seconds() if oldest else None,
        last_processed_at=_iso(last) if last else None,
        today=store.decisions_since(local_midnight),
        progress=stall or "ok",
        stuck=stuck,
        drain_window_minutes=DRAIN_WINDOW_MINUTES,
        drained_in_window=drained,
        drain_per_minute=round(drained / minutes, 2),
        drain_minutes=round(minutes, 1),
        backlog=len(waiting),
        eta_seconds=len(waiting) * minutes / drained * 60 if waiting and drained else None,
        waiting_by_inbox=_by_inbox(waiting, inboxes),
        last_error=_last_error_of(store),
        watchdog=f"withheld: {stall}" if stall else "sent when systemd asks",
    )


def _drain(store: Store, now: datetime) -> tuple[int, float]:
    """Entries out of the inboxes in the window, and the minutes they took: the window, or
    less when the first of them left later (a card copied in 2 minutes ago drains at its own
    pace, not at a fifth of it)."""
    since = now - timedelta(minutes=DRAIN_WINDOW_MINUTES)
    first = store.first_finished_since(since)
    if first is None:
        return 0, DRAIN_WINDOW_MINUTES
    minutes = min(DRAIN_WINDOW_MINUTES, (now - first).total_seconds() / 60)
    return store.finished_since(since), max(MIN_DRAIN_MINUTES, minutes)


def _last_error_of(store: Store) -> dict[str, str] | None:
    error = store.last_error()
    if error is None:
        return None
    path = printable(error.path)
    # Decode errors are stored as "<path>: <reason>" already; the path is said once.
    return {"at": _iso(error.at), "path": path, "reason": error.reason.removeprefix(f"{path}: ")}


def _by_inbox(paths: list[str], inboxes: tuple[Path, ...]) -> dict[str, int]:
    """Waiting entries per configured inbox (the deepest inbox that holds the path)."""
    counts = {str(inbox): 0 for inbox in inboxes}
    deepest_first = sorted(inboxes, key=lambda inbox: len(inbox.parts), reverse=True)
    for path in paths:
        holder = next((inbox for inbox in deepest_first if Path(path).is_relative_to(inbox)), None)
        key = str(holder) if holder else "elsewhere"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def format_status(report: StatusReport) -> str:
    states = ", ".join(f"{state} {count}" for state, count in report.images_by_state.items())
    oldest = (
        f"{report.oldest_waiting_seconds:.0f} s"
        if report.oldest_waiting_seconds is not None
        else "nothing waiting"
    )
    today = ", ".join(f"{name} {count}" for name, count in sorted(report.today.items()) if count)
    inboxes = ", ".join(f"{inbox} {count}" for inbox, count in report.waiting_by_inbox.items())
    return "\n".join(
        [
            f"images:         {states}",
            f"queue depth:    {report.queue_depth}",
            f"moves waiting:  {report.moves_waiting}",
            f"oldest waiting: {oldest}",
            f"waiting:        {inboxes or 'nothing'}",
            f"drain:          {_drain_line(report)}",
            f"last processed: {report.last_processed_at or 'never'}",
            f"today:          {today or 'nothing yet'}",
            f"progress:       {report.progress}",
            f"watchdog:       {report.watchdog}",
            f"last error:     {_last_error(report)}",
            f"stuck:          {len(report.stuck) or 'none'}",
            *(
                f"  {entry['path']}: {entry['reason']} (since {entry['since']})"
                for entry in report.stuck  # oldest first
            ),
        ]
    )


def _drain_line(report: StatusReport) -> str:
    rate = (
        f"{report.drained_in_window} in the last {report.drain_window_minutes} min "
        f"({report.drain_per_minute:g}/min over {report.drain_minutes:g} min)"
    )
    if not report.backlog:
        return f"{rate}; backlog empty"
    if report.eta_seconds is None:
        return f"{rate}; {report.backlog} waiting, no estimate while nothing drains"
    return f"{rate}; {report.backlog} waiting, done in about {_duration(report.eta_seconds)}"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes / 60:.1f} h"


def _last_error(report: StatusReport) -> str:
    error = report.last_error
    if error is None:
        return "none"
    return f"{error['at']} {error['path']}: {error['reason']}"
