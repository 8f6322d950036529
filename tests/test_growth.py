"""Growth: a generated database the real status reads; embeddings as float16 and float32."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine

from bench.growth import station_config
from bench.growth_data import EMBEDDING_DIM, generate
from bench.readme_queries import read_only, readme_queries
from daemon.classify.classifier import ClipClassifier
from daemon.embeddings import from_stored, to_stored
from daemon.storage.database import head_revision, upgrade_database
from daemon.storage.schema import Base
from tests.daemon_support import REPO_ROOT

IMAGES = 2_000


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated station database of IMAGES images, and its configuration beside it."""
    root = tmp_path_factory.mktemp("growth")
    generate(root / "tigerwatch.db", IMAGES, root, now=datetime.now(UTC), seed=1)
    station_config(root)
    return root


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with read_only(db) as connection:
        return connection.execute(sql).fetchall()


def test_generated_database_is_at_head_with_every_kind_of_row(grown: Path) -> None:
    db = grown / "tigerwatch.db"
    assert rows(db, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert rows(db, "PRAGMA foreign_key_check") == []
    states = dict(rows(db, "SELECT state, count(*) FROM images GROUP BY state"))
    assert sum(states.values()) == IMAGES  # type: ignore[arg-type]
    assert set(states) == {"queued", "routing", "done"}
    decisions = dict(rows(db, "SELECT decision, count(*) FROM images GROUP BY decision"))
    assert decisions["negative"] > decisions["uncertain"] > 0  # type: ignore[operator]
    assert decisions["positive"] > 0 and decisions["quarantined"] > 0  # type: ignore[operator]
    for table in ("duplicates", "rejects", "stuck_moves", "verdicts", "audit_samples"):
        assert rows(db, f"SELECT count(*) FROM {table}")[0][0] > 0, table  # type: ignore[operator]


def test_generated_embeddings_read_back_as_unit_vectors(grown: Path) -> None:
    stored = rows(grown / "tigerwatch.db", "SELECT embedding, embedding_dim FROM classifications")
    assert len(stored) >= IMAGES * 0.95
    for blob, dim in stored[:50]:
        vector = from_stored(blob, dim)  # type: ignore[arg-type]
        assert vector.shape == (EMBEDDING_DIM,)
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-3)


def test_real_status_command_reads_the_generated_database(grown: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "-c", str(grown / "tigerwatch.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    report = json.loads(run.stdout)
    counts = dict(rows(grown / "tigerwatch.db", "SELECT state, count(*) FROM images GROUP BY 1"))
    assert report["images_by_state"] == counts
    assert report["queue_depth"] == counts["queued"] > 0
    assert len(report["stuck"]) == 2
    assert report["waiting_by_inbox"][str(grown / "inbox")] > 0
    assert Path(report["last_error"]["path"]).is_relative_to(grown / "inbox")


def test_every_readme_query_runs_on_the_generated_database(grown: Path) -> None:
    queries = readme_queries()
    titles = [query.title for query in queries]
    assert len(queries) >= 4, titles
    assert any("image_latest" in query.sql for query in queries)
    with read_only(grown / "tigerwatch.db") as connection:
        found = {query.title: connection.execute(query.sql).fetchall() for query in queries}
    # Each finds rows; "today" may not in the first minutes after midnight UTC, when the newest
    # frames are still queued.
    assert [title for title, result in found.items() if not result and "today" not in title] == []


def test_migrated_indexes_are_the_models_indexes_partial_conditions_included(
    tmp_path: Path,
) -> None:
    """Alembic's comparison ignores a partial index's WHERE; compare SQLite's own text."""
    migrated, created = tmp_path / "migrated.db", tmp_path / "created.db"
    upgrade_database(f"sqlite:///{migrated}")
    engine = create_engine(f"sqlite:///{created}")
    Base.metadata.create_all(engine)
    engine.dispose()
    sql = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"

    def indexes(db: Path) -> dict[str, str]:
        with sqlite3.connect(db) as connection:
            return {name: " ".join(text.split()) for name, text in connection.execute(sql)}

    assert indexes(migrated) == indexes(created)


def test_float16_and_float32_embeddings_read_back_through_one_helper() -> None:
    vector = np.random.default_rng(3).standard_normal(EMBEDDING_DIM).astype(np.float32)
    vector /= np.linalg.norm(vector)
    legacy = vector.astype("<f4").tobytes()  # how rows were written before migration 0007
    half = to_stored(vector)
    assert len(half) == EMBEDDING_DIM * 2 and len(legacy) == EMBEDDING_DIM * 4
    np.testing.assert_array_equal(from_stored(legacy, EMBEDDING_DIM), vector)
    assert from_stored(legacy, None).dtype == np.float32  # a row without a dimension: float32
    read = from_stored(half, EMBEDDING_DIM)
    assert read.dtype == np.float32
    np.testing.assert_allclose(read, vector, atol=1e-3)
    with pytest.raises(ValueError, match="3 bytes"):
        from_stored(b"abc", EMBEDDING_DIM)


def test_float16_storage_keeps_real_embeddings_pointing_the_same_way(
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
    samples_dir: Path,
) -> None:
    classifier = ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets)
    photos = [
        photo
        for folder in ("tiger", "night_ir", "other_animal")  # edge_cases holds broken files
        for photo in sorted((samples_dir / folder).glob("*.jp*g"))
    ]
    assert photos
    frames = []
    for photo in photos:
        with Image.open(photo) as image:
            frames.append(image.convert("RGB"))
    cosines = []
    for result in classifier.classify(frames):
        full = result.embedding.astype(np.float64)
        half = from_stored(to_stored(result.embedding), full.shape[0]).astype(np.float64)
        cosines.append(float(np.dot(full, half) / np.linalg.norm(full) / np.linalg.norm(half)))
    # Measured on the samples: the smallest cosine is given in README "Querying the database".
    print(f"float16 against float32: 1 - min cosine {1 - min(cosines):.2e}, {len(cosines)} photos")
    assert min(cosines) > 0.999999
