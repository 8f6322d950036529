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

import numpy as np
import numpy.typing as npt

from daemon.config_labels import DEFAULT_LABELS
from daemon.embeddings import STORED
from daemon.storage.database import upgrade_database

EMBEDDING_DIM = 512  # ViT-B/32's projection
FRAMES_PER_DAY = 1500  # a busy station: a million frames in about two years
CHUNK = 20_000  # rows per executemany and commit
MODEL = "openai/clip-vit-base-patch32"
REVISIONS = ("3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", "e6a30b603a447e251fdaca1c3056b2a16cdfebeb")
CAMERAS: tuple[tuple[str | None, str | None], ...] = (
    ("RECONYX", "HC600 HYPERFIRE"),
    ("RECONYX", "HF2 PRO COVERT"),
    ("Bushnell", "119949"),
    ("Browning", "BTC-8E"),
    ("SPYPOINT", "FORCE-20"),
    (None, None),  # a camera that writes no EXIF
)
# Outcomes of done images, in the proportions of a station that mostly sees deer and snow.
DONE_SHARES = {
    "negative": 0.9165,
    "uncertain": 0.04,
    "positive": 0.03,
    "quarantined": 0.005,
    "vanished": 0.0005,
    "retried": 0.008,  # negative, after a failed decode: keeps its last_error
}
SCORE_RANGES = {"positive": (0.5, 1.0), "uncertain": (0.2, 0.5), "negative": (0.0, 0.2)}
QUEUED_SHARE = 0.0002  # the newest images still wait to be classified
ROUTING = 20  # classified, not yet moved
RECLASSIFIED_SHARE = 0.005  # an older classification too: the view must pick the newest
DUPLICATE_SHARE = 0.03
REJECT_SHARE = 0.001
VERDICT_SHARE = 0.002
AUDIT_SAMPLE = 200
LABELS_JSON = json.dumps([{"text": label.name, "target": label.target} for label in DEFAULT_LABELS])
LABEL_NAMES = tuple(label.name for label in DEFAULT_LABELS)

IMAGE_COLUMNS = (
    "id, sha256, original_path, original_name, size_bytes, first_seen_at, state, decision, "
    "attempts, last_error, intended_path, final_path, done_at, capture_time, camera_make, "
    "camera_model"
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


class _Timeline:
    """Arrival times evenly spread over the days N frames take, the newest just before now."""

    def __init__(self, images: int, now: datetime) -> None:
        self.now = now
        self.step = 86_400.0 / FRAMES_PER_DAY
        self.start = now - timedelta(seconds=images * self.step + 60)

    def at(self, index: int, plus: float = 0.0) -> datetime:
        return self.start + timedelta(seconds=index * self.step + plus)


def stamp(moment: datetime) -> str:
    """SQLAlchemy's SQLite DateTime text for a UTC moment: naive, always with microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


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
    timeline = _Timeline(images, now)
    counts = dict.fromkeys(("images", "classifications", "duplicates"), 0)
    for first in range(0, images, CHUNK):
        rows = _chunk(rng, range(first, min(first + CHUNK, images)), images, timeline, root)
        connection.executemany(_insert("images", IMAGE_COLUMNS), rows.images)
        connection.executemany(
            _insert("classifications", CLASSIFICATION_COLUMNS), rows.classifications
        )
        connection.executemany(_insert("duplicates", DUPLICATE_COLUMNS), rows.duplicates)
        connection.commit()
        counts["images"] += len(rows.images)
        counts["classifications"] += len(rows.classifications)
        counts["duplicates"] += len(rows.duplicates)
    counts |= _extras(connection, rng, images, timeline, root)
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return GrowthDatabase(db_path, counts, time.monotonic() - started)


def _open_states(index: int, images: int) -> str | None:
    """'queued' for the newest few, 'routing' for the ones just before them, else None."""
    queued = max(5, int(images * QUEUED_SHARE))
    if index >= images - queued:
        return "queued"
    if index >= images - queued - ROUTING:
        return "routing"
    return None


def _chunk(
    rng: np.random.Generator, indexes: range, images: int, timeline: _Timeline, root: Path
) -> _Rows:
    rows = _Rows()
    outcomes = rng.choice(list(DONE_SHARES), size=len(indexes), p=list(DONE_SHARES.values()))
    embeddings = _embeddings(rng, len(indexes))
    extras = rng.random((len(indexes), 4))
    for offset, index in enumerate(indexes):
        outcome = str(outcomes[offset])
        state = _open_states(index, images)
        image, classified = _image_row(index, outcome, state, timeline, root, extras[offset])
        rows.images.append(image)
        if classified is not None:
            rows.classifications += _classification_rows(
                index + 1, classified, embeddings[offset], image, extras[offset]
            )
        if state is None and extras[offset, 3] < DUPLICATE_SHARE:
            rows.duplicates.append(_duplicate_row(index + 1, image, root))
    return rows


def _embeddings(rng: np.random.Generator, count: int) -> list[bytes]:
    """Unit vectors as the daemon stores them now (float16 bytes), one per image."""
    vectors = rng.standard_normal((count, EMBEDDING_DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    data = vectors.astype(STORED).tobytes()
    width = EMBEDDING_DIM * STORED.itemsize
    return [data[row * width : (row + 1) * width] for row in range(count)]


def _image_row(
    index: int,
    outcome: str,
    state: str | None,
    timeline: _Timeline,
    root: Path,
    extra: npt.NDArray[np.float64],
) -> tuple[tuple[object, ...], str | None]:
    """One images row, and the decision it was classified with (None: never classified)."""
    camera = int(extra[0] * len(CAMERAS))
    name = f"IMG_{index % 10_000:04d}.JPG"
    source = str(root / "inbox" / f"cam{camera:02d}" / "DCIM" / "100MEDIA" / name)
    seen = timeline.at(index)
    make, model = CAMERAS[camera]
    capture = None if make is None else seen.replace(tzinfo=None) + timedelta(hours=10)
    decision = {"retried": "negative"}.get(outcome, outcome)
    classified = decision if decision in SCORE_RANGES else None
    error = {
        "quarantined": f"{source}: truncated JPEG (no end marker)",
        "vanished": f"{source}: gone from the inbox before it could be moved",
        "retried": f"{source}: decoder process died (signal 9)",
    }.get(outcome)
    attempts = {"quarantined": 3, "retried": 1}.get(outcome, 0)
    folder = {"positive": "review", "uncertain": "review/uncertain"}.get(decision, decision)
    final = None if decision == "vanished" else str(root / folder / seen.date().isoformat() / name)
    done: str | None = stamp(timeline.at(index, 3.0 + 4 * extra[1]))
    intended = final
    if state == "queued":
        classified = decision = error = intended = final = done = None  # type: ignore[assignment]
        attempts = 0
    elif state == "routing":
        done = final = None
    row = (
        index + 1,
        hashlib.sha256(b"growth %d" % index).hexdigest(),
        source,
        name,
        2_000_000 + int(extra[2] * 3_000_000),
        stamp(seen),
        state or "done",
        decision,
        attempts,
        error,
        intended,
        final,
        done,
        None if capture is None else capture.isoformat(" ", "microseconds"),
        make if classified else None,
        model if classified else None,
    )
    return row, classified


def _classification_rows(
    image_id: int,
    decision: str,
    embedding: bytes,
    image: tuple[object, ...],
    extra: npt.NDArray[np.float64],
) -> list[tuple[object, ...]]:
    low, high = SCORE_RANGES[decision]
    score = low + (high - low) * float(extra[2])
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
