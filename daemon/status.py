"""Summarises the queue for `tigerwatch status`: counts, backlog, last activity, today's totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from daemon.progress import stall_from_records
from daemon.storage.schema import printable, utcnow
from daemon.storage.store import Store


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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def gather_status(
    store: Store, *, now: datetime | None = None, stall_seconds: float = 300.0
) -> StatusReport:
    now = now or utcnow()
    local_midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    counts = store.counts_by_state()
    oldest = store.oldest_queued_since()
    last = store.last_done_at()
    stall = stall_from_records(store.queue_progress(), now, stall_seconds)
    stuck = [
        {"path": printable(entry.source_path), "reason": entry.reason, "since": _iso(entry.since)}
        for entry in store.stuck_moves()
    ]
    return StatusReport(
        images_by_state={state: counts.get(state, 0) for state in ("queued", "routing", "done")},
        queue_depth=counts.get("queued", 0),
        moves_waiting=store.pending_move_count() + counts.get("routing", 0),
        oldest_waiting_seconds=(now - oldest).total_seconds() if oldest else None,
        last_processed_at=_iso(last) if last else None,
        today=store.decisions_since(local_midnight),
        progress=stall or "ok",
        stuck=stuck,
    )


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
    return "\n".join(
        [
            f"images:         {states}",
            f"queue depth:    {report.queue_depth}",
            f"moves waiting:  {report.moves_waiting}",
            f"oldest waiting: {oldest}",
            f"last processed: {report.last_processed_at or 'never'}",
            f"today:          {today or 'nothing yet'}",
            f"progress:       {report.progress}",
            f"stuck:          {len(report.stuck) or 'none'}",
            *(
                f"  {entry['path']}: {entry['reason']} (since {entry['since']})"
                for entry in report.stuck
            ),
        ]
    )
