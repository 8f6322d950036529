"""Deployments and events end to end: a real daemon files every frame of a burst together."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from daemon.cli import main
from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    SETTLE_TIMEOUT,
    Station,
    check_invariant,
    daemon_thread,
    drain_after_last_restart,
    make_station,
    noise_jpeg,
    query,
    ready_lines,
    settled,
    start_daemon_process,
    wait_until,
    write_file,
)

T0 = datetime(2026, 12, 1, 3, 0, 0)
EVENTS_FILED = "SELECT count(*) FROM events WHERE refile_pending > 0"


def taken_at(moment: datetime) -> Image.Exif:
    """EXIF with DateTimeOriginal in the Exif IFD, as a camera trap writes it."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = moment.strftime("%Y:%m:%d %H:%M:%S")
    return exif


def burst(staging: Path, count: int, *, seed: int, start: datetime = T0) -> list[Path]:
    """`count` distinct frames, 2 s apart, in `staging` (not yet in an inbox)."""
    return [
        write_file(
            staging / f"IMG_{seed + index:04d}.JPG",
            noise_jpeg(seed + index, exif=taken_at(start + timedelta(seconds=2 * index))),
        )
        for index in range(count)
    ]


def scores(capsys: pytest.CaptureFixture[str], config: Path, frames: list[Path]) -> list[float]:
    """The tiger score `tigerwatch classify --json` gives each frame."""
    capsys.readouterr()
    main(["classify", "-c", str(config), "--json", *map(str, frames)])
    results = json.loads(capsys.readouterr().out)
    return [float(result["target_score"]) for result in results]


def one_positive(
    capsys: pytest.CaptureFixture[str], root: Path, model: Path, frames: list[Path], **extra: object
) -> tuple[Station, Path]:
    """A station whose thresholds make exactly one frame (returned) positive, the rest negative."""
    probe = make_station(root, model)
    found = scores(capsys, probe.config_path, frames)
    ranked = sorted(found, reverse=True)
    assert ranked[0] > ranked[1], f"two frames score alike: {found}"
    threshold = (ranked[0] + ranked[1]) / 2
    decision = {"positive_threshold": threshold, "uncertain_threshold": threshold}
    station = make_station(root, model, decision=decision, **extra)  # type: ignore[arg-type]
    return station, frames[found.index(ranked[0])]


def drop(station: Station, frames: list[Path], folder: str) -> list[Path]:
    """Publish frames into an inbox sub-folder the way an uploader does (write, then rename)."""
    target = station.inbox / folder
    target.mkdir(parents=True, exist_ok=True)
    placed = []
    for frame in frames:
        temporary = target / f".{frame.name}.part"
        temporary.write_bytes(frame.read_bytes())
        temporary.rename(target / frame.name)
        placed.append(target / frame.name)
    return placed


def filed(station: Station) -> list[tuple[str, str, int | None, str | None]]:
    """(name, final path below the station, event id, deployment) of every image."""
    rows = query(
        station,
        "SELECT original_name, final_path, event_id, deployment FROM images ORDER BY original_name",
    )
    return [
        (str(name), str(Path(str(final)).relative_to(station.root)), event, deployment)  # type: ignore[misc]
        for name, final, event, deployment in rows
    ]


def idle(station: Station, images: int) -> bool:
    """Every frame filed, every event's frames where the event sends them."""
    try:
        done = query(station, "SELECT count(*) FROM images WHERE state = 'done'")[0][0]
        pending = query(station, EVENTS_FILED)[0][0]
    except sqlite3.OperationalError:
        return False
    return done == images and pending == 0 and settled(station)


def in_review_together(station: Station, count: int) -> tuple[int, str]:
    """Asserts `count` frames in one positive event, all in its review folder; returns it."""
    [(event_id, frames, decision)] = query(station, "SELECT id, frame_count, decision FROM events")
    assert (frames, decision) == (count, "positive")
    folder = f"review/2026-12-01/cam1/event-{event_id}"
    placed = filed(station)
    assert [(str(Path(final).parent), event) for _, final, event, _ in placed] == [
        (folder, event_id)
    ] * count
    assert query(station, "SELECT DISTINCT decision FROM images") == [("positive",)]
    return int(str(event_id)), folder


# --- the burst ---------------------------------------------------------------------------------


def test_one_positive_frame_sends_its_whole_burst_to_review_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frames = burst(tmp_path / "staging", 5, seed=100)
    station, positive = one_positive(capsys, tmp_path / "station", tiny_model_dir, frames)

    with daemon_thread(station):
        drop(station, frames, "cam1")
        wait_until(lambda: idle(station, 5), "the burst filed")

    event_id, _ = in_review_together(station, 5)
    reasons = query(station, "SELECT original_name, route_reason FROM images")
    lifted = {str(name) for name, reason in reasons if reason is not None}
    assert lifted == {frame.name for frame in frames} - {positive.name}
    assert all(f"event {event_id} (cam1, " in str(r) for _, r in reasons if r is not None)
    assert (
        query(station, "SELECT decision FROM classifications ORDER BY image_id").count(
            ("positive",)
        )
        == 1
    )
    assert check_invariant(station) == []


def test_a_positive_frame_arriving_last_promotes_the_archived_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frames = burst(tmp_path / "staging", 5, seed=200)
    station, positive = one_positive(capsys, tmp_path / "station", tiny_model_dir, frames)
    negatives = [frame for frame in frames if frame != positive]

    with daemon_thread(station):
        drop(station, negatives, "cam1")
        wait_until(lambda: idle(station, 4), "the four negatives archived")
        archived = {name: final for name, final, _, _ in filed(station)}
        drop(station, [positive], "cam1")
        wait_until(lambda: idle(station, 5), "the positive frame and the promotions")

    assert {str(Path(p).parent) for p in archived.values()} == {"archive/2026-12-01/cam1"}
    _, folder = in_review_together(station, 5)
    refiles = query(
        station, "SELECT source_path, final_path, state, decision, reason, note FROM refiles"
    )
    assert sorted(
        (
            str(Path(str(s)).relative_to(station.root)),
            str(Path(str(f)).parent.relative_to(station.root)),
        )
        for s, f, *_ in refiles
    ) == sorted((final, folder) for final in archived.values())
    assert {(state, decision, note) for _, _, state, decision, _, note in refiles} == {
        ("done", "positive", None)
    }
    assert all("is positive" in str(reason) for *_, reason, _ in refiles)
    assert check_invariant(station) == []


@pytest.fixture
def locked_folders() -> Iterator[list[Path]]:
    folders: list[Path] = []
    yield folders
    for folder in folders:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_a_frame_its_folder_will_not_let_go_holds_up_no_other_camera(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Path,
    locked_folders: list[Path],
) -> None:
    """Staff made an archive folder immutable (or another account owns it): the promotion of
    its frames fails there, and used to pause every move of the station for the whole
    destination retry, again and again. Now those frames wait alone; a restart retries them."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a folder refuse root's unlinks")
    frames = burst(tmp_path / "staging", 5, seed=600)
    other = burst(tmp_path / "staging-cam2", 1, seed=700, start=T0 + timedelta(days=1))
    # An hour's retry: a station-wide pause would hold cam2's frame past the test's wait.
    worker = {"destination_retry_seconds": 3600, "max_move_attempts": 3}
    station, positive = one_positive(
        capsys, tmp_path / "station", tiny_model_dir, frames, worker=worker
    )
    negatives = [frame for frame in frames if frame != positive]
    with daemon_thread(station):
        drop(station, negatives, "cam1")
        wait_until(lambda: idle(station, 4), "the four negatives archived")
        archive = station.root / "archive" / "2026-12-01" / "cam1"
        done = subprocess.run(["chattr", "+i", str(archive)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        locked_folders.append(archive)
        drop(station, [positive], "cam1")
        wait_until(lambda: query(station, EVENTS_FILED)[0][0] == 1, "the promotion tried")
        [late] = drop(station, other, "cam2")
        wait_until(lambda: settled(station), "cam2's frame filed while cam1's frames wait")
        assert query(station, EVENTS_FILED)[0][0] == 1  # still owed, not given up
        assert check_invariant(station) == []  # the held frames are where they are recorded
    assert (station.root / "archive" / "2026-12-02" / "cam2" / late.name).exists()
    subprocess.run(["chattr", "-i", str(archive)], check=True)
    with daemon_thread(station):  # a restart is how staff say "fixed": tried again at once
        wait_until(lambda: idle(station, 6), "the promotions after the restart")
    assert len(list((station.root / "review").rglob("*.JPG"))) == 5
    assert check_invariant(station) == []


def test_promotion_leaves_a_frame_staff_judged_in_its_verdict_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frames = burst(tmp_path / "staging", 4, seed=210)
    station, positive = one_positive(capsys, tmp_path / "station", tiny_model_dir, frames)
    negatives = [frame for frame in frames if frame != positive]
    judged_folder = station.root / "review" / "verdicts" / "not-tiger"

    with daemon_thread(station):
        drop(station, negatives, "cam1")
        wait_until(lambda: idle(station, 3), "the three negatives archived")
        name, archived, _, _ = filed(station)[0]
        (station.root / archived).rename(judged_folder / name)
        judged_sql = "SELECT count(*) FROM verdicts v JOIN images i ON i.id = v.image_id "
        judged_sql += "WHERE i.final_path = ?"
        wait_until(
            lambda: query(station, judged_sql, str(judged_folder / name)) == [(1,)],
            "the staff verdict recorded",
        )
        drop(station, [positive], "cam1")
        wait_until(lambda: idle(station, 4), "the positive frame and the promotions")

    placed = {n: str(Path(final).parent) for n, final, _, _ in filed(station)}
    assert placed.pop(name) == "review/verdicts/not-tiger"
    [(event_id,)] = query(station, "SELECT id FROM events")
    assert set(placed.values()) == {f"review/2026-12-01/cam1/event-{event_id}"}
    assert query(station, "SELECT count(*) FROM refiles") == [(2,)]
    assert check_invariant(station) == []


def test_events_are_split_by_time_gap_and_by_deployment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    seeds = (300, 301, 302, 303)
    probes = [write_file(tmp_path / "staging" / f"{seed}.jpg", noise_jpeg(seed)) for seed in seeds]
    found = scores(capsys, make_station(tmp_path / "station", tiny_model_dir).config_path, probes)
    # The best-scoring pixels become cam1's first frame, the only positive one; the EXIF added
    # below changes the bytes, not the pixels, so not the scores.
    order = sorted(range(4), key=lambda index: -found[index])
    threshold = (found[order[0]] + found[order[1]]) / 2
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        decision={"positive_threshold": threshold, "uncertain_threshold": threshold},
        deployments={"cam2": {"clock_offset_seconds": 43200, "timezone": "+10:00"}},
    )
    plan = [  # folder, name, capture time: cam2 and the inbox's own frame are seconds apart
        ("cam1", "first.jpg", T0),
        ("cam1", "later.jpg", T0 + timedelta(minutes=10)),
        ("cam2", "c2.jpg", T0 + timedelta(seconds=1)),
        ("", "top.jpg", T0 + timedelta(seconds=3)),
    ]
    with daemon_thread(station):
        for (folder, name, moment), index in zip(plan, order, strict=True):
            data = noise_jpeg(seeds[index], exif=taken_at(moment))
            write_file(station.inbox / folder / name, data)
        wait_until(lambda: idle(station, 4), "four frames filed")

    placed = {name: (str(Path(final).parent), dep) for name, final, _, dep in filed(station)}
    events = query(station, "SELECT deployment, frame_count, decision FROM events")
    assert sorted(events, key=str) == sorted(
        [
            ("cam1", 1, "positive"),
            ("cam1", 1, "negative"),
            ("cam2", 1, "negative"),
            (None, 1, "negative"),
        ],
        key=str,
    )
    [(first_event,)] = query(
        station, "SELECT event_id FROM images WHERE original_name = ?", "first.jpg"
    )
    assert placed == {
        "first.jpg": (f"review/2026-12-01/cam1/event-{first_event}", "cam1"),
        "later.jpg": ("archive/2026-12-01/cam1", "cam1"),
        "c2.jpg": ("archive/2026-12-01/cam2", "cam2"),
        "top.jpg": ("archive/2026-12-01", None),
    }
    times = query(
        station,
        "SELECT capture_time, capture_time_corrected, capture_time_utc FROM images "
        "WHERE deployment = 'cam2'",
    )
    assert times == [
        ("2026-12-01 03:00:01.000000", "2026-12-01 15:00:01.000000", "2026-12-01 05:00:01.000000")
    ]
    assert check_invariant(station) == []


# --- crashes during promotion ------------------------------------------------------------------


def test_sigkill_during_promotion_then_restart_completes_every_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frames = burst(tmp_path / "staging", 5, seed=400)
    station, positive = one_positive(capsys, tmp_path / "station", tiny_model_dir, frames)
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    try:
        wait_until(lambda: ready_lines(log) == 1, "the daemon ready", PROCESS_START_TIMEOUT)
        drop(station, [frame for frame in frames if frame != positive], "cam1")
        wait_until(lambda: idle(station, 4), "the four negatives archived")
        drop(station, [positive], "cam1")
        # Kill as soon as the first promotion is recorded as intended: its move, or the next
        # ones, are under way.
        wait_until(lambda: _refiles(station) > 0, "a promotion begun", interval=0.001)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=SETTLE_TIMEOUT)
        open_at_kill = query(station, "SELECT count(*) FROM refiles WHERE state = 'routing'")
        done_at_kill = query(station, "SELECT count(*) FROM refiles WHERE state = 'done'")
    finally:
        if process.poll() is None:
            process.kill()
    print(
        f"\n[events] at the SIGKILL: {open_at_kill[0][0]} refile(s) open, {done_at_kill[0][0]} done"
    )

    drain_after_last_restart(
        station, log, 5, timeout=SETTLE_TIMEOUT, note="after a SIGKILL during promotion"
    )
    wait_until(lambda: idle(station, 5), "every event filed after the restart")
    in_review_together(station, 5)
    assert query(station, "SELECT count(*) FROM refiles WHERE state = 'routing'") == [(0,)]
    assert check_invariant(station) == []


def _refiles(station: Station) -> int:
    try:
        return int(str(query(station, "SELECT count(*) FROM refiles")[0][0]))
    except sqlite3.OperationalError:
        return 0
