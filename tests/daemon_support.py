"""Helpers for tests that run the real daemon: configs, waiting, and the no-loss invariant."""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from daemon.config import Config, load_config
from daemon.service import run_daemon
from daemon.speculation import Speculation

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
# Generous ceilings for polling: a loaded 2-core machine must not make the tests flaky. They
# only bound how long a hang takes to fail; nothing asserts how fast anything happened.
SETTLE_TIMEOUT = 60.0
PROCESS_START_TIMEOUT = 120.0


def wait_for(predicate: Callable[[], bool], timeout: float, *, interval: float = 0.05) -> bool:
    """Poll until `predicate` is true; returns its last value (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def wait_until(
    predicate: Callable[[], bool],
    what: str,
    timeout: float = SETTLE_TIMEOUT,
    *,
    interval: float = 0.05,
) -> None:
    """wait_for that fails the test, naming what it waited for."""
    assert wait_for(predicate, timeout, interval=interval), (
        f"timed out after {timeout} s waiting for {what}"
    )


def returns_within(call: Callable[[], object], timeout: float) -> bool:
    """Run `call` in a thread; True when it returned within `timeout`: a hang guard only."""
    thread = threading.Thread(target=call, name="returns-within", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


# --- making files ---------------------------------------------------------------------------------


def noise_jpeg(
    seed: int, size: tuple[int, int] = (64, 48), *, exif: Image.Exif | None = None
) -> bytes:
    """A JPEG of random pixels: a distinct content for every seed."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    extra = {} if exif is None else {"exif": exif}
    image.save(buffer, "JPEG", quality=90, **extra)
    return buffer.getvalue()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a COM segment: other bytes, same pixels, same decoding cost."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@dataclass(frozen=True)
class Station:
    """The folders and config file of one test station in tmp_path."""

    root: Path
    config_path: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def db_path(self) -> Path:
        return self.root / "tigerwatch.db"

    def config(self) -> Config:
        return load_config(self.config_path)

    def destinations(self) -> list[Path]:
        return [self.root / name for name in ("review", "archive", "quarantine")]


def make_station(root: Path, model_dir: Path, **overrides: object) -> Station:
    """Write a config with test-friendly timings; `overrides` replace whole sections."""
    settings: dict[str, object] = {
        "station": "test-station",
        "paths": {
            "inbox": "inbox",
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
        },
        "database": {"url": "sqlite:///tigerwatch.db"},
        "model": {"name_or_path": str(model_dir), "batch_size": 8, "threads": 1},
        # A short incomplete grace: the suites drop truncated JPEGs that must reach quarantine.
        "watch": {
            "quiet_seconds": 0.3,
            "incomplete_grace_seconds": 1.0,
            "rescan_interval_seconds": 60,
            "health_check_seconds": 0.5,
        },
        "worker": {
            "batch_max_wait_seconds": 0.2,
            "retry_delay_seconds": 0.2,
            "max_decode_attempts": 2,
            "destination_retry_seconds": 0.5,
        },
        "logging": {"level": "DEBUG"},
    }
    settings.update(overrides)
    root.mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    config_path = root / "tigerwatch.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    return Station(root=root, config_path=config_path)


@contextmanager
def daemon_thread(station: Station) -> Iterator[threading.Event]:
    """Run the daemon in a thread of this process; stopped (and joined) on exit."""
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_daemon(station.config(), stop=stop)), daemon=True
    )
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "daemon thread did not stop within 60 s"
        assert result == [0], f"daemon exited with {result}"


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's syntax, e.g. "2m") at `mount_point`; skips without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {mount_point}: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def start_daemon_process(station: Station, log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "-c", str(station.config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def stop_daemon_process(process: subprocess.Popen[bytes], *, timeout: float = 60) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


# --- database views of the outcome ---------------------------------------------------------------


def tigerwatch_status(station: Station) -> str:
    """What `tigerwatch status` prints for the station, run as an operator would."""
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "-c", str(station.config_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def query(station: Station, sql: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(station.db_path, timeout=30) as connection:
        return connection.execute(sql, params).fetchall()


def migrated(station: Station) -> bool:
    """The daemon has created its schema (queries made before that would fail or create it)."""
    if not station.db_path.exists():
        return False
    try:
        query(station, "SELECT count(*) FROM rejects")
    except sqlite3.OperationalError:
        return False
    return True


def scalar(station: Station, sql: str, *params: object) -> int:
    """One integer from the database; 0 while the schema does not exist yet."""
    if not migrated(station):
        return 0
    value = query(station, sql, *params)[0][0]
    assert isinstance(value, int), value
    return value


def count(station: Station, table: str) -> int:
    return scalar(station, f"SELECT count(*) FROM {table}")


def images_done(station: Station) -> int:
    if not station.db_path.exists():
        return 0
    try:
        return int(query(station, "SELECT count(*) FROM images WHERE state = 'done'")[0][0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0


def all_rows_done(station: Station) -> bool:
    if not station.db_path.exists():
        return False
    try:
        open_rows = sum(
            int(query(station, f"SELECT count(*) FROM {table} WHERE state != 'done'")[0][0])
            for table in ("images", "duplicates", "rejects")
        )
    except sqlite3.OperationalError:
        return False
    return open_rows == 0


def inbox_files(station: Station) -> list[Path]:
    """Files (and links) still in the inbox with an accepted image suffix."""
    return sorted(
        path
        for path in station.inbox.rglob("*")
        if (path.is_file() or path.is_symlink())
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
    )


def settled(station: Station) -> bool:
    """The daemon is idle: nothing accepted waits in the inbox and no row is open."""
    return not inbox_files(station) and all_rows_done(station)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the restart after the last SIGKILL ----------------------------------------------------------


def ready_lines(log_path: Path) -> int:
    """How many times the daemon logged READY to `log_path`: once per start."""
    if not log_path.exists():
        return 0
    return log_path.read_text(errors="replace").count("daemon.service: ready in")


def drain_after_last_restart(
    station: Station,
    log_path: Path,
    distinct_contents: int,
    *,
    timeout: float,
    note: str,
    interval: float = 0.05,
) -> float:
    """Start the daemon once more after the last SIGKILL, let it drain, stop it with SIGTERM.

    Waits up to `timeout` for a new READY line, then up to `timeout` more (polling every
    `interval`) until `distinct_contents` images are done and all is settled; asserts both and
    a clean exit 0, with `note` in every message. Returns the seconds from spawn to drained.
    """
    readies_before = ready_lines(log_path)
    process = start_daemon_process(station, log_path)
    restarted = time.monotonic()
    try:
        # Ready first: when the last kill came after everything was done, "settled" is true at
        # once, and a SIGTERM before the daemon runs would end the imports, not test a clean stop.
        ready = wait_for(lambda: ready_lines(log_path) > readies_before, timeout)
        assert ready, f"the daemon did not become ready after the last restart {note}"
        drained = wait_for(
            lambda: images_done(station) == distinct_contents and settled(station),
            timeout,
            interval=interval,
        )
        seconds = time.monotonic() - restarted
    finally:
        try:
            exit_code = stop_daemon_process(process)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert drained, f"not drained {timeout:.0f} s after the last restart {note}"
    assert exit_code == 0, f"SIGTERM exit code {exit_code} {note}"
    return seconds


# --- the invariant -------------------------------------------------------------------------------


def check_invariant(
    station: Station,
    dropped_contents: set[str] | None = None,
    *,
    stuck: frozenset[Path] = frozenset(),
) -> list[str]:
    """Everything that must hold once the daemon is idle; returns the violations (empty = ok).

    `stuck`: inbox entries the test made unmovable; each must be recorded as stuck (and only
    those), and their rows and files are left out of the checks below.

    - every row is done; no accepted file is left in the inbox;
    - each distinct content has exactly one image row; nothing was classified twice;
    - every recorded final path exists, holds the recorded content, and lies in the folder
      that its outcome names; every file in a destination is recorded exactly once;
    - with `dropped_contents`: every dropped content has an image row;
    - PRAGMA integrity_check is ok.
    """
    problems: list[str] = []
    config = station.config()
    recorded_stuck = _check_stuck(station, stuck, problems)
    if leftovers := [path for path in inbox_files(station) if path not in stuck]:
        problems.append(f"files left in the inbox: {[str(p) for p in leftovers[:5]]}")
    for kind, table in (("image", "images"), ("duplicate", "duplicates"), ("reject", "rejects")):
        for row in query(station, f"SELECT id, state FROM {table} WHERE state != 'done'"):
            if (kind, row[0]) not in recorded_stuck:
                problems.append(f"{table} row {row[0]} left in state {row[1]}")
    integrity = query(station, "PRAGMA integrity_check")
    if integrity != [("ok",)]:
        problems.append(f"integrity_check: {integrity}")
    twice = query(
        station,
        # `rescore --apply` decides again from a stored embedding: no second classification.
        "SELECT image_id, count(*) FROM classifications WHERE rescored_from IS NULL "
        "GROUP BY image_id HAVING count(*) > 1",
    )
    problems += [f"image {image_id} classified {count} times" for image_id, count in twice]
    recorded = _check_recorded_files(station, config, problems)
    _check_destinations_recorded(station, recorded, problems)
    if dropped_contents is not None:
        known = {row[0] for row in query(station, "SELECT sha256 FROM images")}
        missing = dropped_contents - known
        if missing:
            problems.append(f"{len(missing)} dropped contents have no image row")
    return problems


def _check_stuck(
    station: Station, expected: frozenset[Path], problems: list[str]
) -> set[tuple[str, int]]:
    """Stuck entries must be exactly the expected ones, each still at its inbox path."""
    try:
        rows = query(station, "SELECT kind, row_id, source_path FROM stuck_moves")
    except sqlite3.OperationalError:  # a schema from before stuck moves
        rows = []
    paths = {Path(str(path)) for _, _, path in rows}
    if paths != set(expected):
        problems.append(
            f"stuck entries {sorted(map(str, paths))}, expected {sorted(map(str, expected))}"
        )
    problems += [
        f"stuck {path} is no longer in place" for path in paths if not os.path.lexists(path)
    ]
    return {(str(kind), int(str(row_id))) for kind, row_id, _ in rows}


def _check_recorded_files(station: Station, config: Config, problems: list[str]) -> set[Path]:
    roots = {
        "positive": config.paths.review,
        "uncertain": config.paths.uncertain,
        "negative": config.paths.archive,
        "quarantined": config.paths.quarantine,
    }
    recorded: set[Path] = set()
    # Staff judge frames by moving them into the verdict folders: any outcome may end there.
    sorted_by_staff = config.paths.review / config.verdicts.folder
    rows = query(station, "SELECT id, sha256, decision, final_path FROM images")
    for image_id, sha256, decision, final_path in rows:
        if decision == "vanished" or (final_path is None and _is_stuck(station, image_id)):
            continue
        if final_path is None:
            problems.append(f"image {image_id} ({decision}) has no final path")
            continue
        path = Path(str(final_path))
        root = sorted_by_staff if sorted_by_staff in path.parents else roots[str(decision)]
        _check_file(path, str(sha256), root, problems, recorded)
    duplicates = query(
        station,
        "SELECT i.sha256, d.final_path FROM duplicates d JOIN images i ON i.id = d.image_id",
    )
    for sha256, final_path in duplicates:
        if final_path is None:
            continue  # left the inbox by other hands; recorded as such
        _check_file(Path(str(final_path)), str(sha256), config.paths.duplicates, problems, recorded)
    for (final_path,) in query(station, "SELECT final_path FROM rejects"):
        if final_path is not None:
            path = Path(str(final_path))
            if not path.is_symlink() and not path.exists():
                problems.append(f"rejected entry missing at {path}")
            recorded.add(path)
    return recorded


def _is_stuck(station: Station, image_id: object) -> bool:
    try:
        sql = "SELECT 1 FROM stuck_moves WHERE kind = 'image' AND row_id = ?"
        return bool(query(station, sql, image_id))
    except sqlite3.OperationalError:
        return False


def _check_file(
    path: Path, sha256: str, root: Path, problems: list[str], recorded: set[Path]
) -> None:
    if path in recorded:
        problems.append(f"{path} recorded twice")
    recorded.add(path)
    if not path.is_file():
        problems.append(f"{path} is recorded but missing")
        return
    if root not in path.parents:
        problems.append(f"{path} is not under {root}")
    if sha256_of(path) != sha256:
        problems.append(f"{path} does not hold the recorded content")


def _audited_contents(station: Station) -> list[tuple[object, ...]]:
    try:
        sql = "SELECT i.sha256 FROM audit_samples a JOIN images i ON i.id = a.image_id"
        return query(station, sql)
    except sqlite3.OperationalError:  # a schema from before the audit
        return []


def _check_destinations_recorded(
    station: Station, recorded: set[Path], problems: list[str]
) -> None:
    # Audit links (and copies of them staff moved into a verdict folder) stand for a frame
    # recorded elsewhere: the audit_samples table records them, not images.final_path.
    audit_folder = station.root / "review" / "audit"
    audited = {row[0] for row in _audited_contents(station)}
    for root in station.destinations():
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                continue
            if path not in recorded and (
                audit_folder in path.parents or (path.is_file() and sha256_of(path) in audited)
            ):
                continue
            if path.name.endswith(".txt"):  # quarantine notes
                continue
            if path.name.startswith(".tigerwatch-partial-"):
                problems.append(f"partial copy left behind: {path}")
            elif path not in recorded:
                problems.append(f"{path} is in a destination but not recorded")


def without_work_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """No frame is decoded or classified during its quiet period (daemon/speculation.py): for
    tests that hold or fail a row's own decode or batch, which work ahead would bypass."""
    monkeypatch.setattr(Speculation, "step", lambda self, free_lanes: False)
