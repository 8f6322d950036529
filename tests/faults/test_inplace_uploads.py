"""In-place uploads that stall: a writer pauses mid-file under the final name, longer than the
quiet period, then finishes. Only the complete file may become an `images` row."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
)
from tests.faults.fault_kit import count, noise_jpeg, report, sha256_hex, wait_until, write_file

QUIET = 0.3
STALL = 3.0  # ten quiet periods: the old daemon took the partial file within the first one
GOOD_DECISIONS = {"positive", "uncertain", "negative"}


def _station(tmp_path: Path, model_dir: Path, **watch: float) -> Station:
    return make_station(
        tmp_path / "station",
        model_dir,
        watch={"quiet_seconds": QUIET, "rescan_interval_seconds": 60, "health_check_seconds": 0.5}
        | watch,
    )


def _half_jpeg() -> tuple[bytes, int]:
    """A JPEG and a cut in its scan data: the first part has no end marker."""
    data = noise_jpeg(11, size=(320, 240))
    return data, len(data) // 2


def _two_frames() -> tuple[bytes, int]:
    """Two JPEGs back to back (as MPO files are) cut after the first: that part ends with FF D9
    and decodes, so only the writer's close tells it from the complete file."""
    first, second = noise_jpeg(12, size=(320, 240)), noise_jpeg(13, size=(320, 240))
    return first + second, len(first)


class StallingWriter(threading.Thread):
    """Writes `data[:cut]` under the final name, keeps the file open for STALL s, then the rest."""

    def __init__(self, path: Path, data: bytes, cut: int) -> None:
        super().__init__(name="stalling-writer", daemon=True)
        self.path, self.data, self.cut = path, data, cut
        self.rows_during_stall = -1
        self.station: Station | None = None

    def run(self) -> None:
        with self.path.open("wb") as upload:
            upload.write(self.data[: self.cut])
            upload.flush()  # on disk, visible to the daemon, while the "link" stalls
            time.sleep(STALL)  # the injected fault: a 2G link pausing mid-upload
            if self.station is not None:
                self.rows_during_stall = count(self.station, "images")
            upload.write(self.data[self.cut :])


@pytest.mark.fault
@pytest.mark.parametrize("cut", [_half_jpeg, _two_frames], ids=["half-jpeg", "first-frame-only"])
def test_a_stalled_in_place_upload_is_recorded_once_with_the_complete_content(
    tmp_path: Path, tiny_model_dir: Path, cut: object
) -> None:
    station = _station(tmp_path, tiny_model_dir)
    data, at = cut()  # type: ignore[operator]
    write_file(station.inbox / "canary.jpg", noise_jpeg(10))
    with daemon_thread(station):
        wait_until(lambda: settled(station) and count(station, "images") == 1, "the canary")
        writer = StallingWriter(station.inbox / "IMG_0001.JPG", data, at)
        writer.station = station
        writer.start()
        writer.join(timeout=STALL + 30)
        wait_until(lambda: count(station, "images") == 2 and settled(station), "the upload")
        rows = query(
            station,
            "SELECT i.sha256, i.decision, i.last_error, c.decision FROM images i"
            " LEFT JOIN classifications c ON c.image_id = i.id"
            " WHERE i.original_path = ?",
            str(writer.path),
        )
        problems = check_invariant(station)
    report(
        f"stalled in-place upload ({cut.__name__})",  # type: ignore[attr-defined]
        {
            "bytes before the stall": f"{at} of {len(data)}",
            "stall (quiet period)": f"{STALL} s ({QUIET} s)",
            "images rows made during the stall": writer.rows_during_stall - 1,
            "images rows for the upload": len(rows),
            "recorded sha256 is the complete file's": bool(rows) and rows[0][0] == sha256_hex(data),
            "decision / classification": [(row[1], row[3]) for row in rows],
            "invariant problems": problems,
        },
    )
    assert len(rows) == 1, f"the upload became {len(rows)} images rows: {rows}"
    recorded_sha, decision, last_error, classified = rows[0]
    assert recorded_sha == sha256_hex(data), "the recorded content is not the complete file"
    assert decision in GOOD_DECISIONS and classified in GOOD_DECISIONS, (decision, last_error)
    assert count(station, "classifications") == 2
    assert problems == []


@pytest.mark.fault
def test_an_upload_that_never_finishes_is_quarantined_as_truncated_after_the_grace(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    grace = 2.0
    station = _station(tmp_path, tiny_model_dir, incomplete_grace_seconds=grace)
    data, at = _half_jpeg()
    with daemon_thread(station):
        dropped = time.monotonic()
        write_file(station.inbox / "IMG_0002.JPG", data[:at])  # closed, never completed
        wait_until(lambda: count(station, "images") == 1 and settled(station), "the partial file")
        seconds = time.monotonic() - dropped
        rows = query(station, "SELECT decision, last_error FROM images")
        problems = check_invariant(station)
    report(
        "upload cut short for good",
        {
            "grace": f"{grace} s",
            "seconds from drop to settled": f"{seconds:.1f}",
            "recorded": rows,
            "invariant problems": problems,
        },
    )
    assert rows[0][0] == "quarantined"
    assert "truncated" in str(rows[0][1]).lower()
    assert problems == []
