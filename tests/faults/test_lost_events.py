"""Lost events: 2,000 files that the watcher never reports are all found by the next rescan."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import daemon.intake.arrivals
import daemon.intake.watcher
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    images_done,
    make_station,
    noise_jpeg,
    scalar,
    settled,
    sha256_of,
    wait_for,
)

FILES = 2_000  # was 5,000: the same behaviour, a minute less of CI
FOLDERS = 10  # cards/DCIM folders the files are spread over, as an upload of several cards
RESCAN_INTERVAL = 60.0
READY_TIMEOUT = 90.0  # start-up and the canary, on a loaded machine
POLL = 0.5  # polling a 2,000-file inbox costs CPU the 2-core daemon needs: look twice a second


@dataclass
class RescanLog:
    """When each rescan ran (monotonic), and how many image rows existed as it began."""

    times: list[float] = field(default_factory=list)
    rows_before: list[int] = field(default_factory=list)

    def after(self, moment: float) -> list[float]:
        return [when for when in self.times if when >= moment]


def record_rescans(station: Station, monkeypatch: pytest.MonkeyPatch) -> RescanLog:
    """Wrap Intake.rescan (the start-up scan and the scheduled ones) to note when each runs."""
    log = RescanLog()
    original = daemon.intake.arrivals.Intake.rescan

    def noted(self: daemon.intake.arrivals.Intake) -> None:
        log.rows_before.append(_image_rows(station))
        log.times.append(time.monotonic())
        original(self)

    monkeypatch.setattr(daemon.intake.arrivals.Intake, "rescan", noted)
    return log


def _image_rows(station: Station) -> int:
    if not station.db_path.exists():
        return 0
    return scalar(station, "SELECT count(*) FROM images")


def create_files(inbox: Path) -> set[str]:
    """FILES distinct tiny JPEGs written straight into the inbox; their SHA-256s."""
    contents: set[str] = set()
    for number in range(FILES):
        folder = inbox / f"card-{number % FOLDERS:02d}" / "DCIM" / "100RECNX"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{number:05d}.JPG"
        path.write_bytes(noise_jpeg(100_000 + number))
        contents.add(sha256_of(path))
    return contents


def deaf_station(tmp_path: Path, model_dir: Path) -> Station:
    return make_station(
        tmp_path / "station",
        model_dir,
        paths={
            "inbox": [{"path": "inbox", "polling": False}],
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
        },
        model={"name_or_path": str(model_dir), "batch_size": 16, "threads": 1},
        watch={
            "quiet_seconds": 0.3,
            "rescan_interval_seconds": RESCAN_INTERVAL,
            "health_check_seconds": 0.5,
        },
    )


@pytest.mark.fault
@pytest.mark.slow
def test_files_created_while_no_events_arrive_are_all_found_by_rescans(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    station = deaf_station(tmp_path, tiny_model_dir)
    # A deaf watcher: no observer is ever started, so no event is ever delivered.
    monkeypatch.setattr(daemon.intake.watcher.InboxWatcher, "start", lambda self: None)
    rescans = record_rescans(station, monkeypatch)
    # Found by the start-up scan: once it is done, that scan's walk of the inbox is over and
    # cannot pick up the files created below.
    canary = station.inbox / "canary.jpg"
    canary.write_bytes(noise_jpeg(99_999))
    canary_content = sha256_of(canary)
    with daemon_thread(station):
        assert wait_for(lambda: images_done(station) == 1, READY_TIMEOUT), "canary not done"
        creation_started = time.monotonic()
        contents = create_files(station.inbox)
        created = time.monotonic()

        def all_done() -> bool:
            return images_done(station) == FILES + 1 and settled(station)

        # A hang guard, not a speed claim: several rescans may pass on a loaded machine.
        drained = wait_for(all_done, 5 * RESCAN_INTERVAL, interval=POLL)
        done_at = time.monotonic()
    assert drained, f"{images_done(station) - 1} of {FILES} done after {done_at - created:.0f} s"

    found_by = rescans.after(creation_started)
    assert found_by, "no rescan ran after the files were created"
    first_rescan = found_by[0]
    rows_at_first_rescan = rescans.rows_before[rescans.times.index(first_rescan)]
    rescans_needed = len([when for when in found_by if when <= done_at])
    figures = {
        "files": FILES,
        "rescan interval (s)": RESCAN_INTERVAL,
        "creation took (s)": round(created - creation_started, 1),
        "first rescan after creation ended (s)": round(first_rescan - created, 1),
        "image rows when that rescan began": rows_at_first_rescan,
        "drain from that rescan (s)": round(done_at - first_rescan, 1),
        "throughput from that rescan (files/s)": round(FILES / (done_at - first_rescan), 1),
        "creation end -> all done (s)": round(done_at - created, 1),
        "rescans between creation and done": rescans_needed,
    }
    print("\n==== fault: lost events (watcher deaf, rescan only) ====")
    for name, value in figures.items():
        print(f"{name + ':':<42}{value}")
    print("=" * 56)

    # Nothing reached the daemon before a rescan: rescans, not events, found them all. How
    # fast is the benchmark's business (a loaded machine may need a second rescan): the
    # figures above are printed, never asserted.
    assert rows_at_first_rescan == 1  # the canary
    assert check_invariant(station, contents | {canary_content}) == []
