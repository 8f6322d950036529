"""Crash safety: SIGKILL the real daemon at random moments of a burst; settle half-done moves."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.config import Config
from daemon.delivery.claim import claim_name
from daemon.delivery.destinations import dated_folder
from daemon.delivery.fileops import PARTIAL_PREFIX, safe_filename
from daemon.delivery.router import Router
from daemon.outcomes import Decision
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Arrival, ClassifiedImage, ModelInfo, PendingMove, Store
from tests.daemon_support import (
    REPO_ROOT,
    Station,
    check_invariant,
    drain_after_last_restart,
    images_done,
    make_station,
    query,
    start_daemon_process,
    wait_for,
)

# Set to replay a failed run: the seed is printed in every assertion message and the summary.
SEED_VARIABLE = "TIGERWATCH_CRASH_SEED"

GOOD_IMAGES = 120  # the 1,000-file SIGKILL burst in tests/faults is the full-size one
DUPLICATE_COPIES = 12  # ~10%: byte-identical copies of good images under other names
WAVES = 6
# The kill moment of each cycle: "startup" kills at a random delay after the spawn (import,
# migration, model load, start-up settlement); "burst" kills at a random point of the work.
KILL_PLAN = ("startup", "burst", "burst", "startup", "burst", "burst", "burst")
WAVE_CYCLES = (0, 1, 2, 4, 5, 6)  # the cycles that move a new wave into the inbox
CARDS = ("card-A/DCIM/100RECNX", "card-B/DCIM/100RECNX", "card-B/DCIM/101RECNX", "upload")
DRAIN_TIMEOUT = 120.0


# --- the burst ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstFile:
    relative: Path  # the same below the staging folder and below the inbox
    sha256: str
    kind: str  # "good", "duplicate" (a copy of a good content) or "bad"


@dataclass
class Burst:
    staging: Path
    files: list[BurstFile] = field(default_factory=list)

    def add(self, relative: str, data: bytes, kind: str) -> BurstFile:
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        item = BurstFile(Path(relative), hashlib.sha256(data).hexdigest(), kind)
        self.files.append(item)
        return item

    def contents(self, *kinds: str) -> set[str]:
        return {item.sha256 for item in self.files if not kinds or item.kind in kinds}


def _noise_jpeg(rng: np.random.Generator) -> bytes:
    """A 320x240 JPEG of a random colour with random noise: distinct content, quick to make."""
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 41, size=(240, 320, 3))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def make_burst(staging: Path, seed: int) -> Burst:
    """Good images (names repeat across cards, as they do), duplicates, and bad files."""
    rng = random.Random(seed)
    pixels_rng = np.random.default_rng(seed)
    burst = Burst(staging)
    goods = [
        burst.add(f"{CARDS[i % 3]}/IMG_{i // 3:04d}.JPG", _noise_jpeg(pixels_rng), "good")
        for i in range(GOOD_IMAGES)
    ]
    for number, original in enumerate(rng.sample(goods, DUPLICATE_COPIES)):
        data = (staging / original.relative).read_bytes()
        burst.add(f"{CARDS[3]}/copy_{number:03d}_{original.relative.name}", data, "duplicate")
    burst.add(f"{CARDS[3]}/noise_1.jpg", rng.randbytes(5000), "bad")
    burst.add(f"{CARDS[3]}/noise_2.jpg", rng.randbytes(20000), "bad")
    burst.add(f"{CARDS[0]}/EMPTY_0001.JPG", b"", "bad")
    for number in range(2):
        data = _noise_jpeg(pixels_rng)
        burst.add(f"{CARDS[number]}/CUT_{number:04d}.JPG", data[: len(data) // 2], "bad")
    return burst


def split_waves(burst: Burst, seed: int) -> list[list[BurstFile]]:
    order = list(burst.files)
    random.Random(seed + 1).shuffle(order)
    return [order[index::WAVES] for index in range(WAVES)]


def drop(files: list[BurstFile], staging: Path, inbox: Path) -> None:
    """Publish files the way an upload tool does: rename() from outside the inbox."""
    for item in files:
        (staging / item.relative).rename(inbox / item.relative)


# --- kills ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillRecord:
    """The database as the killed daemon left it (read after it died, so exact)."""

    cycle: int
    moment: str
    seconds_after_start: float
    images_done_before: int
    images_done_at_kill: int
    queued: int
    routing: int
    moves_open: int  # duplicate and reject rows not yet out of the inbox
    inbox_files: int

    @property
    def work_open(self) -> bool:
        # Files still waiting for intake count too: a kill while they are hashed and
        # recorded is one of the windows this test exists to hit.
        return self.queued + self.routing + self.moves_open + self.inbox_files > 0


@dataclass
class CrashRun:
    station: Station
    burst: Burst
    waves: list[list[BurstFile]]
    rng: random.Random
    log_path: Path
    note: str  # the seed and how to replay it, for every assertion message
    dropped: list[BurstFile] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)

    def drop_half(self, wave: list[BurstFile], half: int) -> None:
        part = wave[: len(wave) // 2] if half == 0 else wave[len(wave) // 2 :]
        drop(part, self.burst.staging, self.station.inbox)
        self.dropped += part

    def contents_dropped(self) -> int:
        return len({item.sha256 for item in self.dropped})


def _count(station: Station, sql: str) -> int:
    if not station.db_path.exists():
        return 0
    try:
        return int(query(station, sql)[0][0])
    except sqlite3.OperationalError:  # killed before the first migration committed: no tables
        return 0


def _files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() or path.is_symlink()]


def snapshot(
    run: CrashRun, cycle: int, moment: str, started: float, done_before: int
) -> KillRecord:
    station = run.station
    return KillRecord(
        cycle=cycle,
        moment=moment,
        seconds_after_start=round(time.monotonic() - started, 3),
        images_done_before=done_before,
        images_done_at_kill=images_done(station),
        queued=_count(station, "SELECT count(*) FROM images WHERE state = 'queued'"),
        routing=_count(station, "SELECT count(*) FROM images WHERE state = 'routing'"),
        moves_open=_count(
            station,
            "SELECT (SELECT count(*) FROM duplicates WHERE state != 'done')"
            " + (SELECT count(*) FROM rejects WHERE state != 'done')",
        ),
        inbox_files=len(_files_under(station.inbox)),
    )


def _open_rows(station: Station) -> int:
    return _count(
        station,
        "SELECT (SELECT count(*) FROM images WHERE state != 'done')"
        " + (SELECT count(*) FROM duplicates WHERE state != 'done')"
        " + (SELECT count(*) FROM rejects WHERE state != 'done')",
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()  # SIGKILL: no handler runs, nothing is flushed or rolled back by the daemon
    assert process.wait(timeout=30) == -signal.SIGKILL


def kill_cycle(run: CrashRun, cycle: int, moment: str) -> None:
    done_before = images_done(run.station)
    wave = run.waves[WAVE_CYCLES.index(cycle)] if cycle in WAVE_CYCLES else None
    process = start_daemon_process(run.station, run.log_path)
    started = time.monotonic()
    try:
        if moment == "startup":
            _kill_soon_after_start(run, wave)
        else:
            _kill_mid_burst(run, wave, done_before)
    finally:
        if process.poll() is None:
            kill(process)
    run.kills.append(snapshot(run, cycle, moment, started, done_before))


def _kill_soon_after_start(run: CrashRun, wave: list[BurstFile] | None) -> None:
    if wave is not None:
        run.drop_half(wave, 0)
        run.drop_half(wave, 1)
    time.sleep(run.rng.uniform(0.2, 3.5))  # the kill moment itself, not a wait for an outcome


def _kill_mid_burst(run: CrashRun, wave: list[BurstFile] | None, done_before: int) -> None:
    """Kill once a random share of the work is done and rows are open: surely mid-work."""
    station = run.station
    if wave is not None:
        run.drop_half(wave, 0)
    if done_before < run.contents_dropped():  # else all dropped so far was already done
        progressed = wait_for(
            lambda: images_done(station) > done_before, DRAIN_TIMEOUT, interval=0.005
        )
        assert progressed, f"no progress after restart {len(run.kills)} {run.note}"
    if wave is not None:
        run.drop_half(wave, 1)  # more files arrive while the daemon is busy
    done_now, dropped = images_done(station), run.contents_dropped()
    target = done_now + max(1, int(run.rng.uniform(0.1, 0.7) * (dropped - done_now)))

    def kill_now() -> bool:
        done = images_done(station)
        # Files still waiting for intake are work too, but the kill should find rows mid-way;
        # the daemon clears a batch in well under a second, so any open row will do.
        return (done >= target and _open_rows(station) >= 1) or done >= dropped

    assert wait_for(kill_now, DRAIN_TIMEOUT, interval=0.005), f"stalled {run.note}"
    time.sleep(run.rng.uniform(0.0, 0.03))  # a little jitter, so the kill lands at any step


# --- checks ---------------------------------------------------------------------------------------


def destination_kind(config: Config, path: Path) -> str:
    """The most specific output folder holding `path` (uncertain lies inside review, ...)."""
    paths = config.paths
    for name, root in (
        ("duplicates", paths.duplicates),
        ("uncertain", paths.uncertain),
        ("quarantine", paths.quarantine),
        ("review", paths.review),
        ("archive", paths.archive),
    ):
        if root in path.parents:
            return name
    return "elsewhere"


def destination_files(station: Station) -> Iterator[Path]:
    for root in station.destinations():
        if root.exists():
            yield from (path for path in _files_under(root) if not path.name.endswith(".txt"))


def placement_problems(station: Station, burst: Burst) -> list[str]:
    """Each content once in its outcome folder; its extra copies all in duplicates."""
    config = station.config()
    found: dict[str, Counter[str]] = {}
    for path in destination_files(station):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found.setdefault(digest, Counter())[destination_kind(config, path)] += 1
    copies = Counter(item.sha256 for item in burst.files)
    bad = burst.contents("bad")
    problems = []
    for digest, count in copies.items():
        places = found.get(digest, Counter())
        expected = (
            Counter({"quarantine": 1}) if digest in bad else Counter({"duplicates": count - 1})
        )
        classified = sum(places.pop(name, 0) for name in ("review", "uncertain", "archive"))
        if classified != (0 if digest in bad else 1):
            problems.append(f"{digest[:12]}: {classified} copies in review/uncertain/archive")
        if +places != +expected:  # unary plus drops zero counts
            problems.append(f"{digest[:12]}: expected {dict(+expected)}, found {dict(places)}")
    if unknown := set(found) - set(copies):
        problems.append(f"{len(unknown)} unknown contents in the destinations")
    return problems


def leftover_problems(station: Station) -> list[str]:
    problems = [f"left in the inbox: {path}" for path in _files_under(station.inbox)]
    for root in station.destinations():
        if root.exists():
            problems += [
                f"temp file left: {path}"
                for path in _files_under(root)
                if path.name.startswith(PARTIAL_PREFIX)
            ]
    quarantine = station.config().paths.quarantine
    for path in _files_under(quarantine):
        if not path.name.endswith(".txt") and not path.with_name(path.name + ".txt").is_file():
            problems.append(f"quarantined without its note: {path}")
    return problems


def tigerwatch_status(station: Station) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "-c", str(station.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    return (result.stdout + result.stderr).strip()


# --- the figures ----------------------------------------------------------------------------------


Figures = dict[str, object]  # printed for the issue note and written to crash-figures.json


def summary_lines(figures: Figures, kills: list[KillRecord], status: str) -> list[str]:
    lines = [
        f"==== tigerwatch crash test (seed {figures['seed']}) ====",
        f"files dropped:            {figures['files_dropped']} ({figures['good_files']} good,"
        f" {figures['duplicate_files']} byte-identical duplicates, {figures['bad_files']} bad)",
        f"distinct contents:        {figures['distinct_contents']}",
        f"SIGKILLs / restarts:      {figures['kills']} / {figures['restarts']}"
        f" ({figures['startup_kills']} at start-up, {figures['burst_kills']} mid-burst;"
        f" {figures['kills_with_work_open']} with work open: rows queued/routing or files"
        " awaiting intake)",
        "kills (cycle, moment, s after start, images done before -> at kill,"
        " queued/routing/moves open, inbox files):",
    ]
    lines += [
        f"  #{k.cycle} {k.moment:<7} {k.seconds_after_start:6.2f} s  done"
        f" {k.images_done_before:3d} -> {k.images_done_at_kill:3d}  open"
        f" {k.queued}/{k.routing}/{k.moves_open}  inbox {k.inbox_files}"
        for k in kills
    ]
    lines += [
        f"drain after last restart: {figures['drain_seconds']:.1f} s",
        f"whole run:                {figures['total_seconds']:.1f} s",
        f"destinations:             {figures['destinations']}",
        f"classifications:          {figures['classifications']}",
        f"invariant violations:     {figures['violations']}",
        "--- tigerwatch status ---",
        status,
        "=" * 40,
    ]
    return lines


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture
def crash_seed() -> int:
    value = os.environ.get(SEED_VARIABLE)
    return int(value) if value else random.SystemRandom().randrange(1, 2**31)


def run_kill_cycles(run: CrashRun) -> None:
    for cycle, moment in enumerate(KILL_PLAN):
        kill_cycle(run, cycle, moment)
    assert len(run.dropped) == len(run.burst.files), run.note


def gather_figures(run: CrashRun, seed: int, drain_seconds: float, started: float) -> Figures:
    station, burst = run.station, run.burst
    placed = list(destination_files(station))
    config = station.config()
    return {
        "seed": seed,
        "files_dropped": len(burst.files),
        "good_files": GOOD_IMAGES,
        "duplicate_files": DUPLICATE_COPIES,
        "bad_files": len(burst.contents("bad")),
        "distinct_contents": len(burst.contents()),
        "kills": len(run.kills),
        "restarts": len(run.kills),
        "startup_kills": sum(k.moment == "startup" for k in run.kills),
        "burst_kills": sum(k.moment == "burst" for k in run.kills),
        "kills_with_work_open": sum(k.work_open for k in run.kills),
        "kill_records": [asdict(k) for k in run.kills],
        "drain_seconds": round(drain_seconds, 2),
        "total_seconds": round(time.monotonic() - started, 1),
        "image_rows": _count(station, "SELECT count(*) FROM images"),
        "classifications": _count(station, "SELECT count(*) FROM classifications"),
        "files_in_destinations": len(placed),
        "destinations": dict(Counter(destination_kind(config, path) for path in placed)),
    }


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path, crash_seed: int
) -> None:
    seed = crash_seed
    note = f"(seed {seed}; replay with {SEED_VARIABLE}={seed})"
    station = make_station(tmp_path / "station", tiny_model_dir)
    burst = make_burst(tmp_path / "staging", seed)
    for card in CARDS:  # the folders exist before the daemon starts, as on a station's FTP root
        (station.inbox / card).mkdir(parents=True, exist_ok=True)
    run = CrashRun(
        station=station,
        burst=burst,
        waves=split_waves(burst, seed),
        rng=random.Random(seed),
        log_path=tmp_path / "daemon.log",
        note=note,
    )
    started = time.monotonic()
    run_kill_cycles(run)
    drain_seconds = drain_after_last_restart(
        station, run.log_path, len(burst.contents()), timeout=DRAIN_TIMEOUT, note=note
    )

    violations = check_invariant(station, dropped_contents=burst.contents())
    violations += placement_problems(station, burst) + leftover_problems(station)
    figures = gather_figures(run, seed, drain_seconds, started)
    figures["violations"] = len(violations)
    (tmp_path / "crash-figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n" + "\n".join(summary_lines(figures, run.kills, tigerwatch_status(station))))
    print(f"figures written to {tmp_path / 'crash-figures.json'}")

    assert violations == [], f"{note}: {violations[:20]}"
    assert figures["image_rows"] == len(burst.contents()), note
    assert figures["classifications"] == len(burst.contents("good")), f"classified twice {note}"
    assert figures["files_in_destinations"] == len(burst.files), note
    burst_kills = [k for k in run.kills if k.moment == "burst"]
    assert all(k.images_done_at_kill > k.images_done_before for k in burst_kills), note
    # Most burst kills must find work open. Not all: with moves in their own thread the
    # daemon can clear a wave between two 5 ms polls; tests/faults/test_sigkill_burst.py
    # adds 16 kills over 1,000 files.
    assert sum(k.work_open for k in burst_kills) >= 3, f"kills did not land mid-work {note}"


# --- settling each half-finished move in-process --------------------------------------------------

MODEL = ModelInfo(
    name="test-model",
    revision="0",
    precision="fp32",
    labels=(("a photo of an Amur tiger", True), ("a photo without a tiger", False)),
    positive_threshold=0.6,
    uncertain_threshold=0.3,
)


class SettleBench:
    """A real database and real folders; rows made with the store as the daemon makes them."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.config = station.config()
        upgrade_database(self.config.database.url)
        self.store = Store(create_db_engine(self.config.database.url))
        self.router = Router(self.store, self.config.paths)

    def arrive(self, name: str, data: bytes) -> tuple[Path, str]:
        path = self.station.inbox / name
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        self.store.record_arrivals([Arrival(str(path), digest, len(data))])
        return path, digest

    def classify_all(self, decision: Decision) -> None:
        queued = self.store.due_images(1000)
        self.store.record_classified([_classified(item.id, decision) for item in queued], MODEL)

    def move_for(self, source: Path) -> PendingMove:
        (move,) = [m for m in self.store.pending_moves() if m.source_path == str(source)]
        return move

    def intend(self, source: Path) -> Path:
        """Record the destination the router would pick, as its first commit does."""
        move = self.move_for(source)
        folder = dated_folder(
            self.config.paths, move.destination, capture_time=None, arrived=move.arrived_at
        )
        intended = folder / safe_filename(source.name)
        self.store.record_intended({(move.kind, move.id): str(intended)})
        intended.parent.mkdir(parents=True, exist_ok=True)
        return intended


def _classified(image_id: int, decision: Decision) -> ClassifiedImage:
    return ClassifiedImage(
        image_id=image_id,
        target_score=0.5,
        decision=decision,
        probabilities={"a photo of an Amur tiger": 0.5, "a photo without a tiger": 0.5},
        embedding=b"\0" * 16,
        embedding_dim=4,
        decode_ms=1.0,
        inference_ms=1.0,
        capture_time=None,
        camera_make=None,
        camera_model=None,
    )


def _jpeg(seed: int) -> bytes:
    return _noise_jpeg(np.random.default_rng(seed))


STRANGER = b"someone else's file"

# Each window a kill can leave a move in, and where the file must be once route_pending ran.
IMAGE_WINDOWS = {
    "classified, no destination recorded yet": "assigned",
    "destination recorded, nothing moved": "intended",
    "hard link made, source not unlinked": "intended",
    "claimed, nothing moved": "intended",
    "claimed and linked, claim not unlinked": "intended",
    "claimed, linked and unlinked, row not marked done": "intended",
    "cross-filesystem copy half written": "intended",
    "cross-filesystem copy published, source not unlinked": "intended",
    "moved, row not marked done": "intended",
    "a stranger's file at the recorded name": "another name",
    "source gone from the inbox": "nowhere",
}


def leave_crash_state(window: str, source: Path, intended: Path | None) -> None:
    """Put the disk in the state a kill in `window` leaves it in."""
    if intended is None:
        return
    claimed = source.with_name(claim_name("i1", source.name))  # the only row: image 1
    match window:
        case "hard link made, source not unlinked":
            os.link(source, intended)
        case "claimed, nothing moved":
            source.rename(claimed)
        case "claimed and linked, claim not unlinked":
            source.rename(claimed)
            os.link(claimed, intended)
        case "claimed, linked and unlinked, row not marked done":
            source.rename(claimed)
            claimed.rename(intended)
        case "cross-filesystem copy half written":
            partial = intended.with_name(f"{PARTIAL_PREFIX}{'0' * 16}-{intended.name}")
            partial.write_bytes(source.read_bytes()[:1000])
        case "cross-filesystem copy published, source not unlinked":
            intended.write_bytes(source.read_bytes())
        case "moved, row not marked done":
            source.rename(intended)
        case "a stranger's file at the recorded name":
            intended.write_bytes(STRANGER)
        case "source gone from the inbox":
            source.unlink()


def station_without_model(tmp_path: Path) -> Station:
    """route_pending never loads the model: the station's model folder need not exist."""
    return make_station(tmp_path / "station", tmp_path / "no-model")


@pytest.mark.parametrize("window", list(IMAGE_WINDOWS))
def test_route_pending_settles_a_half_finished_image_move(window: str, tmp_path: Path) -> None:
    station = station_without_model(tmp_path)
    bench = SettleBench(station)
    source, digest = bench.arrive("IMG_0001.JPG", _jpeg(1))
    bench.classify_all(Decision.NEGATIVE)
    expected = IMAGE_WINDOWS[window]
    intended = None if expected == "assigned" else bench.intend(source)
    leave_crash_state(window, source, intended)

    assert bench.router.route_pending().waiting == 0

    ((state, decision, final),) = query(station, "SELECT state, decision, final_path FROM images")
    assert state == "done"
    assert not source.exists()
    if expected == "nowhere":
        assert (decision, final) == ("vanished", None)
        assert intended is not None and not intended.exists()
        return
    final_path = Path(str(final))
    assert decision == "negative"
    assert station.config().paths.archive in final_path.parents
    assert hashlib.sha256(final_path.read_bytes()).hexdigest() == digest
    assert not list(final_path.parent.glob(f"{PARTIAL_PREFIX}*"))
    if expected == "intended":
        assert final_path == intended
    if expected == "another name":
        assert intended is not None and final_path != intended
        assert intended.read_bytes() == STRANGER  # never overwritten
        intended.unlink()  # not the daemon's file: everything else must be accounted for
    assert bench.router.route_pending().moved == 0  # the next start-up finds nothing to do
    assert check_invariant(station) == []


def test_a_claim_no_row_owns_goes_back_to_the_inbox_at_start_up(tmp_path: Path) -> None:
    """Content found changed, row closed, then a kill before the claim was returned."""
    station = station_without_model(tmp_path)
    bench = SettleBench(station)
    (station.inbox / "cam").mkdir()
    orphan = station.inbox / "cam" / claim_name("i7", "IMG_0001.JPG")
    orphan.write_bytes(_jpeg(2))
    newer = station.inbox / "cam" / "IMG_0001.JPG"  # an upload published at the name since
    newer.write_bytes(_jpeg(3))

    assert bench.router.return_leftover_claims() == 1

    assert not orphan.exists()
    assert newer.read_bytes() == _jpeg(3)
    assert (station.inbox / "cam" / "IMG_0001-1.JPG").read_bytes() == _jpeg(2)


def test_route_pending_settles_duplicate_and_reject_moves_in_one_pass(tmp_path: Path) -> None:
    station = station_without_model(tmp_path)
    bench = SettleBench(station)
    bench.arrive("IMG_0001.JPG", _jpeg(1))
    bench.classify_all(Decision.NEGATIVE)
    linked, _ = bench.arrive("copy-1.JPG", _jpeg(1))
    linked_intended = bench.intend(linked)
    os.link(linked, linked_intended)  # killed between link and unlink
    gone, _ = bench.arrive("copy-2.JPG", _jpeg(1))
    bench.intend(gone)
    gone.unlink()  # taken away by hand before it could be moved
    reject = station.inbox / "link.jpg"
    reject.symlink_to("/etc/hostname")
    bench.store.record_reject(str(reject), "symbolic link (never followed)")
    reject_intended = bench.intend(reject)
    reject.rename(reject_intended)  # moved, killed before record_moved

    assert bench.router.route_pending().waiting == 0

    assert query(station, "SELECT source_path, state, final_path FROM duplicates") == [
        (str(linked), "done", str(linked_intended)),
        (str(gone), "done", None),
    ]
    assert query(station, "SELECT state, final_path FROM rejects") == [
        ("done", str(reject_intended))
    ]
    assert reject_intended.is_symlink() and not linked.exists()
    assert check_invariant(station) == []


@pytest.mark.parametrize("note_left", ["note written", "note half-written", "temp note left"])
def test_route_pending_settles_a_quarantine_move_with_one_note(
    note_left: str, tmp_path: Path
) -> None:
    """Killed after the move, before record_moved: the note exists, or only its temp file."""
    station = station_without_model(tmp_path)
    bench = SettleBench(station)
    source, _ = bench.arrive("broken.jpg", b"not an image")
    (queued,) = bench.store.due_images(10)
    bench.store.record_decode_failure(queued.id, "broken.jpg: not an image", give_up=True)
    intended = bench.intend(source)
    source.rename(intended)
    note = intended.with_name("broken.jpg.txt")
    partial = intended.with_name(f"{PARTIAL_PREFIX}{'0' * 16}-broken.jpg.txt")
    if note_left in ("note written", "temp note left"):
        note.write_text("written before the crash\n")
    if note_left in ("note half-written", "temp note left"):  # the last: killed before unlink
        partial.write_text("file: ")

    bench.router.route_pending()

    assert sorted(path.name for path in intended.parent.iterdir()) == [
        "broken.jpg",
        "broken.jpg.txt",
    ]
    assert query(station, "SELECT state, decision, final_path FROM images") == [
        ("done", "quarantined", str(intended))
    ]
    assert check_invariant(station) == []
