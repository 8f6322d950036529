"""Growth: a generated station database of N images through the real schema, filled in bulk."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from bench.growth_events import (
    EVENT_COLUMNS,
    REFILE_COLUMNS,
    EventBook,
    Frame,
    day_folder,
    filing_folder,
    naive,
    pending_refiles,
    stamp,
)
from bench.growth_plan import (
    DECISIONS,
    LOCAL,
    NO_EXIF,
    QUARANTINED,
    RETRIED,
    VANISHED,
    Plan,
    clock_of,
    deployment_name,
    make_plan,
)
from daemon.config_labels import DEFAULT_LABELS
from daemon.embeddings import STORED
from daemon.storage.database import upgrade_database

EMBEDDING_DIM = 512  # ViT-B/32's projection
FRAMES_PER_DAY = 1500  # a busy station: a million frames in about two years
CHUNK = 20_000  # rows per executemany and commit
MODEL = "openai/clip-vit-base-patch32"
REVISIONS = ("3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", "e6a30b603a447e251fdaca1c3056b2a16cdfebeb")
# The cameras (normalised, as decode/exif.py stores them) and the info strips their frames
# lose (top, bottom, pixels); a deployment keeps its camera.
CAMERAS: tuple[tuple[str, str, int, int], ...] = (
    ("reconyx", "hc600 hyperfire", 32, 64),
    ("reconyx", "hf2 pro covert", 30, 60),
    ("bushnell", "119949", 0, 96),
    ("browning", "btc-8e", 0, 80),
    ("spypoint", "force-20", 48, 0),
)
NO_CAMERA = (None, None, 0, 0)  # a camera that writes no EXIF and burns no strip
QUEUED_SHARE = 0.0002  # the newest images still wait to be classified
ROUTING = 20  # classified, not yet moved
RECLASSIFIED_SHARE = 0.005  # an older classification too: the view must pick the newest
DUPLICATE_SHARE = 0.03
REJECT_SHARE = 0.001
VERDICT_SHARE = 0.002
AUDIT_SAMPLE = 200
LABELS_JSON = json.dumps([{"text": label.name, "target": label.target} for label in DEFAULT_LABELS])
LABEL_NAMES = tuple(label.name for label in DEFAULT_LABELS)
ERRORS = {
    QUARANTINED: "truncated JPEG (no end marker)",
    VANISHED: "gone from the inbox before it could be moved",
    RETRIED: "decoder process died (signal 9)",
}

IMAGE_COLUMNS = (
    "id, sha256, original_path, original_name, size_bytes, first_seen_at, state, decision, "
    "attempts, last_error, intended_path, final_path, done_at, capture_time, camera_make, "
    "camera_model, infrared, strip_top, strip_bottom, deployment, capture_time_corrected, "
    "capture_time_utc, event_id, route_reason"
)
CLASSIFICATION_COLUMNS = (
    "image_id, created_at, model_name, model_revision, precision, labels, probabilities, "
    "target_score, decision, positive_threshold, uncertain_threshold, decode_ms, inference_ms, "
    "embedding, embedding_dim, head_id"
)
DUPLICATE_COLUMNS = "image_id, source_path, arrived_at, state, intended_path, final_path, done_at"
REJECT_COLUMNS = "source_path, reason, arrived_at, state, intended_path, final_path, done_at"


def _insert(table: str, columns: str) -> str:
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


def camera_of(deployment: int) -> tuple[str | None, str | None, int, int]:
    if deployment in NO_EXIF:
        return NO_CAMERA
    return CAMERAS[deployment % len(CAMERAS)]


@dataclass(frozen=True)
class GrowthDatabase:
    path: Path
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows written
    seconds: float = 0.0


@dataclass
class _Rows:
    images: list[tuple[object, ...]] = field(default_factory=list)
    classifications: list[tuple[object, ...]] = field(default_factory=list)
    duplicates: list[tuple[object, ...]] = field(default_factory=list)
    refiles: list[tuple[object, ...]] = field(default_factory=list)


class _Timeline:
    """Arrival times evenly spread over the days N frames take, the newest just before now."""

    def __init__(self, images: int, now: datetime) -> None:
        self.now = now
        self.step = 86_400.0 / FRAMES_PER_DAY
        self.start = now - timedelta(seconds=images * self.step + 60)
        # Plan offset 0 on the cameras' corrected clock (camera-local, naive).
        self.origin = self.start.astimezone(UTC).replace(tzinfo=None) + LOCAL

    def at(self, index: int, plus: float = 0.0) -> datetime:
        return self.start + timedelta(seconds=index * self.step + plus)

    def classified_at(self, index: int) -> datetime:
        return self.at(index, 2.0)


@dataclass(frozen=True)
class _Station:
    """What every row of one generation shares."""

    root: Path
    images: int
    timeline: _Timeline
    plan: Plan
    book: EventBook


def generate(
    db_path: Path, images: int, root: Path, *, now: datetime, seed: int = 0
) -> GrowthDatabase:
    """Migrate a new database with the project's own upgrade, then insert N images in bulk."""
    started = time.monotonic()
    upgrade_database(f"sqlite:///{db_path}")
    connection = sqlite3.connect(db_path)
    # Generation only: a crash here loses a benchmark input, nothing else.
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-400000")
    rng = np.random.default_rng(seed)
    station = _station(rng, images, root, now)
    counts = dict.fromkeys(("images", "classifications", "duplicates", "refiles"), 0)
    for first in range(0, images, CHUNK):
        rows = _chunk(rng, range(first, min(first + CHUNK, images)), station)
        connection.executemany(_insert("images", IMAGE_COLUMNS), rows.images)
        connection.executemany(
            _insert("classifications", CLASSIFICATION_COLUMNS), rows.classifications
        )
        connection.executemany(_insert("duplicates", DUPLICATE_COLUMNS), rows.duplicates)
        connection.executemany(_insert("refiles", REFILE_COLUMNS), rows.refiles)
        connection.commit()
        for table in counts:
            counts[table] += len(getattr(rows, table))
    counts["events"] = _write_events(connection, station)
    counts |= _extras(connection, rng, images, station.timeline, root)
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return GrowthDatabase(db_path, counts, time.monotonic() - started)


def _station(rng: np.random.Generator, images: int, root: Path, now: datetime) -> _Station:
    timeline = _Timeline(images, now)
    queued = _queued(images)
    classified = np.arange(images) < images - queued
    plan = make_plan(rng, images, timeline.step, classified)
    return _Station(root, images, timeline, plan, EventBook(plan, timeline.origin))


def _write_events(connection: sqlite3.Connection, station: _Station) -> int:
    open_from = station.images - _queued(station.images) - ROUTING
    pending = pending_refiles(station.plan, range(open_from, station.images))
    rows = list(station.book.rows(station.timeline.classified_at, pending))
    connection.executemany(_insert("events", EVENT_COLUMNS), rows)
    return len(rows)


def _queued(images: int) -> int:
    return max(5, int(images * QUEUED_SHARE))


def _open_state(index: int, images: int) -> str | None:
    """'queued' for the newest few, 'routing' for the ones just before them, else None."""
    queued = _queued(images)
    if index >= images - queued:
        return "queued"
    if index >= images - queued - ROUTING:
        return "routing"
    return None


def _chunk(rng: np.random.Generator, indexes: range, station: _Station) -> _Rows:
    rows = _Rows()
    embeddings = _embeddings(rng, len(indexes))
    extras = rng.random((len(indexes), 4))
    for offset, index in enumerate(indexes):
        state = _open_state(index, station.images)
        image = _image_row(index, state, station, extras[offset])
        rows.images.append(image)
        frame = _frame(index, station, str(image[3]))
        if int(station.plan.event[index]):
            rows.classifications += _classification_rows(
                index + 1, station.plan, embeddings[offset], image, extras[offset]
            )
            if station.book.promoted(frame, state is None):
                done = datetime.fromisoformat(str(image[12])).replace(tzinfo=UTC)
                rows.refiles.append(station.book.refile_row(frame, station.root, index + 1, done))
        if state is None and extras[offset, 3] < DUPLICATE_SHARE:
            rows.duplicates.append(_duplicate_row(index + 1, image, station.root))
    return rows


def _embeddings(rng: np.random.Generator, count: int) -> list[bytes]:
    """Unit vectors as the daemon stores them now (float16 bytes), one per image."""
    vectors = rng.standard_normal((count, EMBEDDING_DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = vectors.astype(STORED).tobytes()
    width = EMBEDDING_DIM * STORED.itemsize
    return [data[row * width : (row + 1) * width] for row in range(count)]


def _frame(index: int, station: _Station, name: str) -> Frame:
    plan = station.plan
    event_id = int(plan.event[index])
    return Frame(
        index=index,
        name=name,
        deployment=deployment_name(int(plan.deployment[index])),
        captured=plan.captured_at(index, station.timeline.origin),
        arrived=station.timeline.at(index),
        event_id=event_id,
        event_start=station.book.start(event_id) if event_id else None,
    )


def _source(index: int, deployment: str | None, root: Path) -> tuple[str, str]:
    name = f"IMG_{index % 10_000:04d}.JPG"
    if deployment is None:
        return str(root / "inbox" / name), name
    return str(root / "inbox" / deployment / "DCIM" / "100MEDIA" / name), name


def _image_row(
    index: int, state: str | None, station: _Station, extra: npt.NDArray[np.float64]
) -> tuple[object, ...]:
    """One images row: filed with its event, or quarantined, vanished, or still open."""
    plan, timeline = station.plan, station.timeline
    deployment = deployment_name(int(plan.deployment[index]))
    source, name = _source(index, deployment, station.root)
    seen = timeline.at(index)
    failure = int(plan.failure[index])
    error = f"{source}: {ERRORS[failure]}" if failure in ERRORS else None
    attempts = {QUARANTINED: 3, RETRIED: 1}.get(failure, 0)
    frame = _frame(index, station, name)
    filed = _filed(frame, failure, state, station)
    done: str | None = stamp(timeline.at(index, 3.0 + 4 * extra[1]))
    if state == "queued":
        opened = (index + 1, _sha(index), source, name, _size(extra), stamp(seen), "queued")
        return (*opened, None, 0, None, None, None, None, *(None,) * 6, deployment, *(None,) * 4)
    intended = final = filed.path
    if state == "routing":
        done = final = None
    return (
        index + 1,
        _sha(index),
        source,
        name,
        _size(extra),
        stamp(seen),
        state or "done",
        filed.decision,
        attempts,
        error,
        intended,
        final,
        done,
        *_decoded(index, frame, station),
        deployment,
        naive(frame.captured) if frame.event_id else None,  # set with the classification
        _utc(index, frame.captured, station) if frame.event_id else None,
        frame.event_id or None,
        filed.reason,
    )


class _Filed(NamedTuple):
    decision: str | None  # images.decision: where the file went
    path: str | None
    reason: str | None  # route_reason, when its event sent it there


def _filed(frame: Frame, failure: int, state: str | None, station: _Station) -> _Filed:
    if failure == QUARANTINED:
        folder = station.root / "quarantine" / day_folder(None, frame.arrived)
        return _Filed("quarantined", str(folder / frame.name), None)
    if failure == VANISHED:
        return _Filed("vanished", None, None)
    own = DECISIONS[int(station.plan.decision[frame.index])]
    event = station.book.decision(frame.event_id)
    book = station.book
    if event == own or (book.promoted(frame, state is None) and book.left_alone(frame)):
        return _Filed(own, str(filing_folder(station.root, own, frame) / frame.name), None)
    folder = filing_folder(station.root, event, frame)
    return _Filed(event, str(folder / frame.name), book.reason(frame.event_id))


def _decoded(index: int, frame: Frame, station: _Station) -> tuple[object, ...]:
    """What decoding read: EXIF time and camera, light, strips (NULL until classified)."""
    if not frame.event_id:
        return (None,) * 6
    code = int(station.plan.deployment[index])
    make, model, top, bottom = camera_of(code)
    offset, _zone = clock_of(code)
    captured = frame.captured
    exif = None if captured is None else captured - timedelta(seconds=offset)
    local = captured or (frame.arrived.astimezone(UTC).replace(tzinfo=None) + LOCAL)
    infrared = int(local.hour >= 19 or local.hour < 6)  # night frames are infrared
    return (naive(exif), make, model, infrared, top, bottom)


def _utc(index: int, captured: datetime | None, station: _Station) -> str | None:
    _offset, zone = clock_of(int(station.plan.deployment[index]))
    if captured is None or zone is None:
        return None
    return stamp((captured - zone).replace(tzinfo=UTC))


def _sha(index: int) -> str:
    return hashlib.sha256(b"growth %d" % index).hexdigest()


def _size(extra: npt.NDArray[np.float64]) -> int:
    return 2_000_000 + int(extra[2] * 3_000_000)


def _classification_rows(
    image_id: int,
    plan: Plan,
    embedding: bytes,
    image: tuple[object, ...],
    extra: npt.NDArray[np.float64],
) -> list[tuple[object, ...]]:
    """The frame's own classification (its decision, not its event's), and an older one."""
    decision = DECISIONS[int(plan.decision[image_id - 1])]
    score = float(plan.score[image_id - 1])
    seen = datetime.fromisoformat(str(image[5]))
    rows = [_classification(image_id, seen + timedelta(seconds=2), score, decision, embedding, 0)]
    if extra[1] < RECLASSIFIED_SHARE:  # an older model revision classified it first
        earlier = seen + timedelta(seconds=1)
        rows.insert(0, _classification(image_id, earlier, score * 0.9, decision, embedding, 1))
    return rows


def _classification(
    image_id: int, at: datetime, score: float, decision: str, embedding: bytes, revision: int
) -> tuple[object, ...]:
    rest = (1.0 - score) / (len(LABEL_NAMES) - 2)
    probabilities = dict(zip(LABEL_NAMES, (score * 0.8, score * 0.2, *[rest] * 4), strict=True))
    return (
        image_id,
        at.isoformat(" ", "microseconds"),
        MODEL,
        REVISIONS[revision],
        "fp32",
        LABELS_JSON,
        json.dumps(probabilities),
        score,
        decision,
        0.5,
        0.2,
        9.5 + score,
        88.0 + score,
        embedding,
        EMBEDDING_DIM,
        None,
    )


def _duplicate_row(image_id: int, image: tuple[object, ...], root: Path) -> tuple[object, ...]:
    name = str(image[3])
    done = datetime.fromisoformat(str(image[12] or image[5])) + timedelta(minutes=5)
    final = root / "archive" / "duplicates" / done.date().isoformat() / name
    source = str(root / "inbox" / "card-copy" / name)
    return (
        image_id,
        source,
        stamp(done.replace(tzinfo=UTC)),
        "done",
        str(final),
        str(final),
        stamp(done.replace(tzinfo=UTC)),
    )


def _extras(
    connection: sqlite3.Connection,
    rng: np.random.Generator,
    images: int,
    timeline: _Timeline,
    root: Path,
) -> dict[str, int]:
    """Rejects, stuck entries, open duplicates, verdicts and an audit sample."""
    rejects = list(_rejects(images, timeline, root))
    connection.executemany(_insert("rejects", REJECT_COLUMNS), rejects)
    routing = [
        row[0]
        for row in connection.execute(
            "SELECT id FROM images WHERE state = 'routing' ORDER BY id LIMIT 3"
        )
    ]
    for number, image_id in enumerate(routing):
        connection.execute(
            _insert("duplicates", DUPLICATE_COLUMNS),
            (
                image_id,
                str(root / "inbox" / "again" / f"{number}.JPG"),
                stamp(timeline.now),
                "routing",
                None,
                None,
                None,
            ),
        )
    stuck = [
        ("image", routing[0], str(root / "inbox" / "locked" / "IMG_0001.JPG"), "permission denied"),
        ("reject", len(rejects), str(root / "inbox" / "locked" / "link"), "read-only file system"),
    ]
    connection.executemany(
        "INSERT INTO stuck_moves (kind, row_id, source_path, reason, since) "
        f"VALUES (?, ?, ?, ?, '{stamp(timeline.now - timedelta(hours=3))}')",
        stuck,
    )
    verdicts = _verdicts(connection, rng, images, timeline)
    audit = _audit(connection, rng, root, timeline)
    return {
        "rejects": len(rejects),
        "stuck_moves": len(stuck),
        "verdicts": verdicts,
        "audit_samples": audit,
    }


def _rejects(images: int, timeline: _Timeline, root: Path) -> Iterator[tuple[object, ...]]:
    count = max(3, int(images * REJECT_SHARE))
    for number in range(count):
        arrived = timeline.at(int(number / count * images))
        open_ = number >= count - 2
        final = (
            None
            if open_
            else str(root / "quarantine" / arrived.date().isoformat() / f"link{number}")
        )
        yield (
            str(root / "inbox" / "cam00" / f"link{number}"),
            "a symbolic link: never followed",
            stamp(arrived),
            "routing" if open_ else "done",
            final,
            final,
            None if open_ else stamp(arrived + timedelta(seconds=5)),
        )


def _verdicts(
    connection: sqlite3.Connection, rng: np.random.Generator, images: int, timeline: _Timeline
) -> int:
    judged = connection.execute(
        "SELECT id, decision FROM images WHERE decision IN ('positive', 'uncertain') "
        "AND state = 'done' ORDER BY id"
    ).fetchall()
    count = min(len(judged), max(10, int(images * VERDICT_SHARE)))
    picks: list[int] = list(rng.choice(len(judged), size=count, replace=False)) if judged else []
    rows = [
        (
            judged[pick][0],
            "tiger" if judged[pick][1] == "positive" else "not-tiger",
            "cli",
            "ranger",
            stamp(timeline.now - timedelta(days=1)),
        )
        for pick in picks
    ]
    connection.executemany(
        "INSERT INTO verdicts (image_id, verdict, source, who, created_at) VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)


def _audit(
    connection: sqlite3.Connection, rng: np.random.Generator, root: Path, timeline: _Timeline
) -> int:
    archived = connection.execute(
        "SELECT id FROM images WHERE decision = 'negative' AND state = 'done'"
    ).fetchall()
    if not archived:
        return 0
    picks = rng.choice(len(archived), size=min(AUDIT_SAMPLE, len(archived)), replace=False)
    batch = (timeline.now - timedelta(days=7)).date().isoformat()
    rows = [
        (
            archived[pick][0],
            batch,
            "negative",
            len(archived) / len(picks),
            len(archived),
            str(root / "review" / "audit" / batch / f"{archived[pick][0]}.JPG"),
            stamp(timeline.now - timedelta(days=7)),
        )
        for pick in picks
    ]
    connection.executemany(
        "INSERT INTO audit_samples (image_id, batch, stratum, weight, population, link_path, "
        "sampled_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return len(rows)
