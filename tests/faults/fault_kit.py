"""Small helpers shared by the watcher-death, clock-jump, SIGTERM and hostile-name fault tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

# The shared helpers live in tests/daemon_support.py; they are re-exported here because the
# fault tests import them from this kit.
from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    SETTLE_TIMEOUT,
    Station,
    count,
    migrated,
    noise_jpeg,
    query,
    scalar,
    sha256_hex,
    wait_until,
    with_comment,
    write_file,
)

__all__ = [
    "PROCESS_START_TIMEOUT",
    "SETTLE_TIMEOUT",
    "count",
    "done_paths",
    "has_row",
    "noise_jpeg",
    "report",
    "row_done",
    "scalar",
    "sha256_hex",
    "wait_until",
    "with_comment",
    "write_file",
]


def done_paths(station: Station) -> set[str]:
    """Inbox paths whose image row is finished."""
    if not migrated(station):
        return set()
    rows = query(station, "SELECT original_path FROM images WHERE state = 'done'")
    return {str(row[0]) for row in rows}


def has_row(station: Station, path: Path) -> bool:
    """True when an image row was made for this inbox path."""
    if not migrated(station):
        return False
    return bool(query(station, "SELECT 1 FROM images WHERE original_path = ?", str(path)))


def row_done(station: Station, path: Path) -> bool:
    return str(path) in done_paths(station)


def report(title: str, figures: Mapping[str, object]) -> None:
    """One clear block of figures per test (visible with pytest -s) for the closing notes."""
    width = max(len(name) for name in figures)
    lines = [f"[fault] {title}"]
    lines += [f"    {name:<{width}} : {value}" for name, value in figures.items()]
    print("\n" + "\n".join(lines))


def block_dated_folders(destination: Path) -> list[Path]:
    """Plain files where the destination's dated folders go, so it refuses every move.

    Yesterday to tomorrow: whatever the time zone makes "today". The caller unlinks them."""
    destination.mkdir(exist_ok=True)
    blockers = [destination / (date.today() + timedelta(days=n)).isoformat() for n in (-1, 0, 1)]
    for blocker in blockers:
        blocker.write_bytes(b"an administrator's notes where the dated folder goes")
    return blockers
