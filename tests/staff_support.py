"""Builds a station database with classified frames on disk, for the staff-loop tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.storage.database import create_db_engine, session_factory, upgrade_database
from daemon.storage.schema import Classification, Image, ImageDecision, ImageState
from tests.daemon_support import Station, sha256_hex

START = datetime(2026, 11, 1, tzinfo=UTC)


def add_frames(
    station: Station,
    scores: Sequence[float],
    *,
    positive: float = 0.5,
    uncertain: float = 0.2,
    hours_apart: float = 1.0,
) -> list[Path]:
    """One delivered frame per score: a real file in its destination and its database rows."""
    upgrade_database(f"sqlite:///{station.db_path}")
    engine = create_db_engine(f"sqlite:///{station.db_path}")
    paths = []
    with session_factory(engine).begin() as session:
        for number, score in enumerate(scores):
            decision = _decision(score, positive, uncertain)
            folder = {"positive": "review", "uncertain": "review/uncertain"}.get(
                decision.value, "archive"
            )
            path = station.root / folder / "2026-11-01" / f"frame-{len(paths)}-{number}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = f"frame {station.root} {number} {score}".encode()
            path.write_bytes(data)
            paths.append(path)
            seen = START + timedelta(hours=hours_apart * number)
            image = Image(
                sha256=sha256_hex(data),
                original_path=str(station.inbox / path.name),
                first_seen_at=seen,
                state=ImageState.DONE,
                decision=decision,
                final_path=str(path),
                done_at=seen,
            )
            image.classifications.append(_classification(score, decision, positive, uncertain))
            session.add(image)
    engine.dispose()
    return paths


def _decision(score: float, positive: float, uncertain: float) -> ImageDecision:
    if score >= positive:
        return ImageDecision.POSITIVE
    return ImageDecision.UNCERTAIN if score >= uncertain else ImageDecision.NEGATIVE


def _classification(
    score: float, decision: ImageDecision, positive: float, uncertain: float
) -> Classification:
    return Classification(
        model_name="tiny",
        precision="fp32",
        labels=[],
        probabilities={},
        target_score=score,
        decision=decision.value,
        positive_threshold=positive,
        uncertain_threshold=uncertain,
    )


def add_column(station: Station, column: str, values: Sequence[object]) -> None:
    """What another branch's migration adds (images.infrared, images.event_id), set per frame."""
    with sqlite3.connect(station.db_path) as connection:
        present = {row[1] for row in connection.execute("PRAGMA table_info(images)")}
        if column not in present:  # images.event_id is the daemon's own since revision 0006
            connection.execute(f"ALTER TABLE images ADD COLUMN {column} INTEGER")
        for image_id, value in enumerate(values, start=1):
            connection.execute(f"UPDATE images SET {column} = ? WHERE id = ?", (value, image_id))
