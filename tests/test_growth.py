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
from sqlalchemy.orm import Session

from bench.growth import station_config
from bench.growth_data import EMBEDDING_DIM, generate
from bench.growth_plan import DEPLOYMENTS
from bench.readme_queries import read_only, readme_queries
from daemon.classify.classifier import ClipClassifier
from daemon.config import load_config
from daemon.config_deployments import utc_offset
from daemon.delivery.destinations import filing_folder
from daemon.embeddings import from_stored, to_stored
from daemon.outcomes import Decision, Destination, destination_for
from daemon.storage.database import head_revision, upgrade_database
from daemon.storage.events import Clock, EventSettings, assign_event
from daemon.storage.schema import Base, ImageDecision, ImageState
from daemon.storage.schema import Image as ImageRow
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
    tables = ("duplicates", "rejects", "stuck_moves", "verdicts", "audit_samples", "events")
    for table in (*tables, "refiles"):
        assert rows(db, f"SELECT count(*) FROM {table}")[0][0] > 0, table  # type: ignore[operator]
    decoded = "SELECT count(*) FROM images WHERE {} AND event_id IS NOT NULL"
    for filled in ("infrared = 1", "infrared = 0", "strip_bottom > 0", "strip_top > 0"):
        assert rows(db, decoded.format(filled))[0][0] > 0, filled  # type: ignore[operator]
    deployments = rows(db, "SELECT count(DISTINCT deployment) FROM images")[0][0]
    assert deployments == DEPLOYMENTS


def test_generated_events_are_what_the_daemon_makes_of_the_frames(
    grown: Path, tmp_path: Path
) -> None:
    """Replay every classified frame, in order, through the daemon's own assign_event."""
    config = load_config(grown / "tigerwatch.yaml")
    clocks = {
        key: Clock(d.clock_offset_seconds, None if d.timezone is None else utc_offset(d.timezone))
        for key, d in config.deployments.items()
    }
    settings = EventSettings(gap_seconds=config.events.gap_seconds, clocks=clocks)
    frames = rows(
        grown / "tigerwatch.db",
        "SELECT i.id, i.sha256, i.original_path, i.deployment, i.capture_time, "
        "l.classification_decision, l.target_score FROM images AS i "
        "JOIN image_latest AS l ON l.id = i.id WHERE i.event_id IS NOT NULL ORDER BY i.id",
    )
    assert len(frames) > IMAGES * 0.95
    replayed = tmp_path / "replayed.db"
    upgrade_database(f"sqlite:///{replayed}")
    engine = create_engine(f"sqlite:///{replayed}")
    with Session(engine) as session:
        for image_id, sha, path, deployment, capture, own, score in frames:
            image = ImageRow(
                id=image_id,
                sha256=sha,
                original_path=path,
                deployment=deployment,
                capture_time=None if capture is None else datetime.fromisoformat(str(capture)),
                state=ImageState.ROUTING,
                decision=ImageDecision(str(own)),
            )
            session.add(image)
            session.flush()
            assign_event(session, image, Decision(str(own)), float(score), settings)  # type: ignore[arg-type]
        session.commit()
    engine.dispose()
    event_sql = (
        "SELECT id, deployment, start_time, end_time, frame_count, round(max_target_score, 9), "
        "decision FROM events ORDER BY id"
    )
    assert rows(grown / "tigerwatch.db", event_sql) == rows(replayed, event_sql)
    image_sql = (
        "SELECT id, event_id, capture_time_corrected, capture_time_utc, decision FROM images "
        "WHERE event_id IS NOT NULL AND id NOT IN "
        "(SELECT image_id FROM refiles WHERE final_path IS NULL) ORDER BY id"
    )
    assert rows(grown / "tigerwatch.db", image_sql) == rows(replayed, image_sql)


def test_generated_frames_lie_where_the_daemon_files_them(grown: Path) -> None:
    config = load_config(grown / "tigerwatch.yaml")
    inboxes = tuple(inbox.path for inbox in config.paths.inbox)
    filed = rows(
        grown / "tigerwatch.db",
        "SELECT i.original_path, i.deployment, i.final_path, i.decision, "
        "i.capture_time_corrected, i.first_seen_at, i.event_id, e.start_time "
        "FROM images AS i LEFT JOIN events AS e ON e.id = i.event_id "
        "WHERE i.final_path IS NOT NULL",
    )
    assert len(filed) > IMAGES * 0.9
    for source, deployment, final, decision, captured, seen, event_id, start in filed:
        assert config.deployments_from.deployment_of(Path(str(source)), inboxes) == deployment
        folder = filing_folder(
            config.paths,
            destination_for(Decision(str(decision)))
            if decision != "quarantined"
            else Destination.QUARANTINE,
            capture_time=None if captured is None else datetime.fromisoformat(str(captured)),
            arrived=datetime.fromisoformat(str(seen)).replace(tzinfo=UTC),
            deployment=None if deployment is None else str(deployment),
            event_id=None if event_id is None else int(str(event_id)),
            event_start=None if start is None else datetime.fromisoformat(str(start)),
        )
        assert Path(str(final)).parent == folder, final
    promoted = rows(
        grown / "tigerwatch.db",
        "SELECT r.final_path, i.final_path, r.source_path, r.decision, i.decision, r.note "
        "FROM refiles AS r JOIN images AS i ON i.id = r.image_id",
    )
    moved = [row for row in promoted if row[0] is not None]
    assert moved and all(row[0] == row[1] and row[3] == row[4] for row in moved)
    assert all(row[1] == row[2] and row[5] for row in promoted if row[0] is None)


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


def test_status_command_leaves_other_commands_heavy_modules_unimported(grown: Path) -> None:
    """Start-up is most of `tigerwatch status`'s time: nothing only other commands need."""
    script = (
        "import contextlib, io, json, sys\n"
        "from daemon.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['status', '-c', {str(grown / 'tigerwatch.yaml')!r}])\n"
        "print(json.dumps([code, sorted({name.split('.')[0] for name in sys.modules})]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    code, modules = json.loads(run.stdout)
    assert code == 0
    assert "sqlalchemy" in modules  # it did read the database
    heavy = {"apscheduler", "numpy", "PIL", "torch", "transformers", "watchdog", "alembic"}
    assert heavy & set(modules) == set()


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
