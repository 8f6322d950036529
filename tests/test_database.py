"""Tests for daemon.storage.database and daemon.storage.schema on real SQLite files."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, exc, inspect, select, text
from sqlalchemy.orm import Session

from daemon.storage import database
from daemon.storage.database import (
    DatabaseError,
    create_db_engine,
    current_revision,
    head_revision,
    session_factory,
    upgrade_database,
)
from daemon.storage.schema import (
    IMAGE_LATEST_VIEW,
    IMAGE_LATEST_VIEW_SQL,
    Base,
    Classification,
    Decision,
    Image,
    ImageDecision,
    ImageState,
    MoveState,
    utcnow,
)

HEAD = head_revision()
REPO_ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "images",
    "classifications",
    "duplicates",
    "rejects",
    "events",
    "refiles",
    "stuck_moves",
    "verdicts",
    "audit_samples",
    "heads",
}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    # A folder that does not exist yet: the engine must create it.
    return tmp_path / "state" / "tigerwatch.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    url = f"sqlite:///{db_path}"
    upgrade_database(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def new_image(sha256: str = "a" * 64, **fields: object) -> Image:
    return Image(sha256=sha256, original_path=f"/inbox/{sha256[:8]}.jpg", **fields)


def new_classification(image: Image, created_at: datetime, score: float) -> Classification:
    return Classification(
        image=image,
        created_at=created_at,
        model_name="openai/clip-vit-base-patch32",
        precision="fp32",
        labels=[{"text": "an Amur tiger", "target": True}, {"text": "a forest", "target": False}],
        probabilities={"an Amur tiger": score, "a forest": 1 - score},
        target_score=score,
        decision=Decision.POSITIVE if score > 0.5 else Decision.NEGATIVE,
        positive_threshold=0.6,
        uncertain_threshold=0.3,
    )


def sqlite_schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as raw:
        return raw.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


# --- migrations -------------------------------------------------------------------------------


def test_upgrade_on_empty_database_creates_tables_and_view(db_url: str, engine: Engine) -> None:
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == TABLES | {"alembic_version"}
    assert inspector.get_view_names() == [IMAGE_LATEST_VIEW]
    assert current_revision(engine) == head_revision()


def test_current_revision_of_a_new_database_is_none(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_migrations_at_head_match_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_a_no_op(db_url: str, db_path: Path, engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        session.add(new_image())
    schema_before = sqlite_schema(db_path)

    upgrade_database(db_url)

    assert sqlite_schema(db_path) == schema_before
    assert current_revision(engine) == head_revision()
    with session_factory(engine)() as session:
        assert session.scalars(select(Image.sha256)).all() == ["a" * 64]


def test_downgrade_to_base_removes_everything(db_url: str, engine: Engine) -> None:
    migration_engine = database.create_migration_engine(db_url)
    try:
        with migration_engine.begin() as connection:
            command.downgrade(database.alembic_config(connection), "base")
    finally:
        migration_engine.dispose()
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == {"alembic_version"}
    assert inspector.get_view_names() == []
    assert current_revision(engine) is None


def test_database_at_an_unknown_newer_revision_is_refused_untouched(
    db_url: str, db_path: Path, engine: Engine
) -> None:
    with session_factory(engine).begin() as session:
        session.add(new_image())
        session.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    schema_before = sqlite_schema(db_path)

    with pytest.raises(DatabaseError, match=r"9999_from_the_future.*newer tigerwatch"):
        upgrade_database(db_url)

    assert sqlite_schema(db_path) == schema_before
    assert current_revision(engine) == "9999_from_the_future"


def test_database_with_foreign_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")

    with pytest.raises(DatabaseError, match=r"other\.db.*photos.*not a tigerwatch database"):
        upgrade_database(f"sqlite:///{path}")

    assert [name for name, _ in sqlite_schema(path)] == ["photos"]


def test_a_failing_revision_rolls_the_whole_upgrade_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS_DIR, migrations)
    (migrations / "versions" / "9999_broken.py").write_text(
        "from alembic import op\n"
        "import sqlalchemy as sa\n"
        f"revision = '9999'\ndown_revision = '{head_revision()}'\n"
        "branch_labels = None\ndepends_on = None\n"
        "def upgrade():\n"
        "    op.add_column('rejects', sa.Column('extra', sa.Integer()))\n"
        "    raise RuntimeError('broken revision')\n"
        "def downgrade():\n    pass\n"
    )
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    monkeypatch.setattr(database, "MIGRATIONS_DIR", migrations)

    with pytest.raises(RuntimeError, match="broken revision"):
        upgrade_database(url)

    # Nothing of the real revisions nor of the broken one survived: it was one transaction.
    assert sqlite_schema(tmp_path / "broken.db") == []


def test_0002_drops_next_attempt_at_and_keeps_the_rows_and_their_checks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    migration_engine = database.create_migration_engine(url)
    try:
        with migration_engine.begin() as connection:
            command.upgrade(database.alembic_config(connection), "0001")
    finally:
        migration_engine.dispose()
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO images (id, sha256, original_path, first_seen_at, state, attempts, "
            "next_attempt_at) VALUES (1, ?, '/in/a.jpg', '2026-01-01 00:00:00', 'queued', 2, "
            "'2026-01-01 00:05:00')",
            ("a" * 64,),
        )
        raw.execute(
            "INSERT INTO classifications (image_id, created_at, model_name, precision, labels, "
            "probabilities, target_score, decision, positive_threshold, uncertain_threshold) "
            "VALUES (1, '2026-01-01 00:01:00', 'm', 'fp32', '[]', '{}', 0.1, 'negative', 0.5, 0.2)"
        )

    upgrade_database(url)

    with sqlite3.connect(path) as raw:
        columns = [row[1] for row in raw.execute("PRAGMA table_info(images)")]
        assert "next_attempt_at" not in columns
        assert raw.execute("SELECT id, attempts FROM images").fetchall() == [(1, 2)]
        assert raw.execute("SELECT image_id FROM classifications").fetchall() == [(1,)]
        assert raw.execute("SELECT id, model_name FROM image_latest").fetchall() == [(1, "m")]
        with pytest.raises(sqlite3.IntegrityError, match="ck_images_state"):
            raw.execute("UPDATE images SET state = 'lost'")


def test_head_read_from_the_revision_files_is_alembics_head() -> None:
    assert database.declared_head() == head_revision()


def test_opening_for_status_refuses_an_older_or_unmigrated_database(
    db_url: str, tmp_path: Path
) -> None:
    migration_engine = database.create_migration_engine(db_url)
    try:
        with migration_engine.begin() as connection:
            command.downgrade(database.alembic_config(connection), "0003")
    finally:
        migration_engine.dispose()
    with pytest.raises(DatabaseError, match=f"revision '0003'; this version needs '{HEAD}'"):
        database.open_migrated_database(db_url)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(DatabaseError, match="no tigerwatch schema"):
        database.open_migrated_database(f"sqlite:///{empty}")


def test_opening_a_database_for_status_does_not_import_alembic(db_url: str) -> None:
    """Alembic's import is a quarter of `tigerwatch status`'s CPU (README "Throughput")."""
    check = (
        "import sys; from daemon.storage.database import open_migrated_database; "
        f"open_migrated_database({db_url!r}).dispose(); "
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'alembic'))"
    )
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert run.stdout.strip() == "[]"


def test_frozen_view_sql_in_the_newest_revision_equals_the_constant() -> None:
    script = ScriptDirectory.from_config(database.alembic_config())
    frozen = next(
        revision.module.IMAGE_LATEST_VIEW_SQL
        for revision in script.walk_revisions()  # newest first
        if hasattr(revision.module, "IMAGE_LATEST_VIEW_SQL")
    )
    assert frozen == IMAGE_LATEST_VIEW_SQL


def test_view_in_the_database_is_the_constant(db_url: str, db_path: Path) -> None:
    assert dict(sqlite_schema(db_path))[IMAGE_LATEST_VIEW] == IMAGE_LATEST_VIEW_SQL


# --- connection settings ----------------------------------------------------------------------


def test_pragmas_are_set_on_every_new_connection(engine: Engine) -> None:
    expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30000}
    # Two connections open at once: DEFERRED, or the second would wait for the first's lock.
    reader = database.deferred(engine)
    with reader.connect() as first, reader.connect() as second:
        for connection in (first, second):
            actual = {
                pragma: connection.exec_driver_sql(f"PRAGMA {pragma}").scalar_one()
                for pragma in expected
            }
            assert actual == expected


def test_migration_engine_has_foreign_keys_off(db_url: str) -> None:
    migration_engine = database.create_migration_engine(db_url)
    try:
        with migration_engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 0
    finally:
        migration_engine.dispose()


def test_first_select_of_a_session_takes_the_write_lock(db_path: Path, engine: Engine) -> None:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with session_factory(engine)() as session:
            session.execute(select(Image.id)).all()

            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
            # WAL: readers are never blocked by the writer.
            assert other.execute("SELECT count(*) FROM images").fetchone() == (0,)

            session.commit()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_deferred_engine_reads_without_the_write_lock(db_path: Path, engine: Engine) -> None:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        with Session(database.deferred(engine)) as session:
            session.execute(select(Image.id)).all()
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_concurrent_read_then_write_transactions_neither_fail_nor_lose_updates(
    db_url: str, engine: Engine
) -> None:
    with session_factory(engine).begin() as session:
        session.add(new_image())
    rounds, errors = 40, []

    def increment_attempts() -> None:
        own_engine = create_db_engine(db_url)
        try:
            for _ in range(rounds):
                with session_factory(own_engine).begin() as session:
                    image = session.scalars(select(Image)).one()
                    image.attempts = image.attempts + 1
        except Exception as error:
            errors.append(error)
        finally:
            own_engine.dispose()

    threads = [threading.Thread(target=increment_attempts) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    with session_factory(engine)() as session:
        assert session.scalars(select(Image.attempts)).one() == 3 * rounds


# --- constraints ------------------------------------------------------------------------------


def test_sha256_is_unique(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        session.add(new_image("b" * 64))
    with (
        pytest.raises(exc.IntegrityError, match=r"UNIQUE constraint failed: images\.sha256"),
        session_factory(engine).begin() as session,
    ):
        session.add(Image(sha256="b" * 64, original_path="/inbox/copy/IMG_0001.JPG"))


def test_foreign_key_is_enforced(engine: Engine) -> None:
    with (
        pytest.raises(exc.IntegrityError, match="FOREIGN KEY constraint failed"),
        engine.begin() as connection,
    ):
        connection.execute(
            text(
                "INSERT INTO duplicates (image_id, source_path, arrived_at, state)"
                " VALUES (999, '/inbox/x.jpg', '2025-01-01 00:00:00', 'routing')"
            )
        )


def test_deleting_an_image_deletes_its_classifications(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        image = new_image()
        session.add_all(
            [new_classification(image, utcnow(), 0.9), new_classification(image, utcnow(), 0.2)]
        )
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM images"))
        assert connection.execute(text("SELECT count(*) FROM classifications")).scalar_one() == 0


CHECKED_COLUMNS = [
    ("images", "state", list(ImageState)),
    ("images", "decision", list(ImageDecision)),
    ("classifications", "decision", list(Decision)),
    ("duplicates", "state", list(MoveState)),
    ("rejects", "state", list(MoveState)),
]


@pytest.mark.parametrize(("table", "column", "members"), CHECKED_COLUMNS)
def test_check_constraint_accepts_every_enum_value_and_nothing_else(
    engine: Engine, table: str, column: str, members: list[str]
) -> None:
    # Raw SQL, as an administrator in the sqlite3 shell would write it: the ORM is bypassed.
    with session_factory(engine).begin() as session:
        session.add(new_image("f" * 64))  # the parent that classifications and duplicates need
    with engine.connect() as connection:
        for number, value in enumerate([*members, "bogus"]):
            row = valid_row(table, number) | {column: str(value)}
            insert = text(f"INSERT INTO {table} ({', '.join(row)}) VALUES (:{', :'.join(row)})")
            if value == "bogus":
                with pytest.raises(
                    exc.IntegrityError, match=f"CHECK constraint failed: ck_{table}_{column}"
                ):
                    connection.execute(insert, row)
            else:
                connection.execute(insert, row)
        connection.rollback()


def valid_row(table: str, number: int) -> dict[str, object]:
    """A row that satisfies every constraint of `table`, given an image with id 1."""
    now = "2025-01-01 00:00:00.000000"
    moved = {"arrived_at": now, "state": "routing", "source_path": "/inbox/x.jpg"}
    rows: dict[str, dict[str, object]] = {
        "images": {
            "sha256": f"{number:064d}",
            "original_path": "/inbox/x.jpg",
            "first_seen_at": now,
            "state": "queued",
        },
        "classifications": {
            "image_id": 1,
            "created_at": now,
            "model_name": "clip",
            "precision": "fp32",
            "labels": "[]",
            "probabilities": "{}",
            "target_score": 0.5,
            "decision": "negative",
            "positive_threshold": 0.6,
            "uncertain_threshold": 0.3,
        },
        "duplicates": {"image_id": 1, **moved},
        "rejects": {"reason": "symlink", **moved},
    }
    return rows[table]


# --- types ------------------------------------------------------------------------------------


def test_timestamps_are_stored_as_naive_utc_and_read_back_aware(engine: Engine) -> None:
    station_time = datetime(2025, 3, 1, 7, 30, tzinfo=timezone(timedelta(hours=10)))
    with session_factory(engine).begin() as session:
        session.add(new_image(first_seen_at=station_time, capture_time=datetime(2025, 3, 1, 7, 29)))

    with engine.connect() as connection:
        stored = connection.execute(text("SELECT first_seen_at, capture_time FROM images")).one()
    assert tuple(stored) == ("2025-02-28 21:30:00.000000", "2025-03-01 07:29:00.000000")
    with session_factory(engine)() as session:
        image = session.scalars(select(Image)).one()
    assert image.first_seen_at == station_time
    assert image.first_seen_at.tzinfo == UTC
    assert image.capture_time == datetime(2025, 3, 1, 7, 29)  # camera-local, stays naive


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with (
        pytest.raises(exc.StatementError, match="naive datetime"),
        session_factory(engine).begin() as session,
    ):
        session.add(new_image(first_seen_at=datetime(2025, 3, 1, 7, 30)))


def test_states_are_plain_strings_in_the_database_and_enums_in_python(engine: Engine) -> None:
    with session_factory(engine).begin() as session:
        session.add(new_image(state=ImageState.ROUTING, decision=ImageDecision.POSITIVE))
    with engine.connect() as connection:
        assert tuple(connection.execute(text("SELECT state, decision FROM images")).one()) == (
            "routing",
            "positive",
        )
    with session_factory(engine)() as session:
        image = session.scalars(select(Image)).one()
    assert image.state is ImageState.ROUTING
    assert image.decision is ImageDecision.POSITIVE
    assert image.attempts == 0


def test_unknown_state_is_refused_before_reaching_the_database(engine: Engine) -> None:
    with (
        pytest.raises(exc.StatementError, match="'bogus' is not a valid ImageState"),
        session_factory(engine).begin() as session,
    ):
        session.add(new_image(state="bogus"))


# --- the image_latest view --------------------------------------------------------------------


def test_view_gives_one_row_per_image_with_its_latest_classification(engine: Engine) -> None:
    now = utcnow()
    with session_factory(engine).begin() as session:
        tiger = new_image("d" * 64)
        # The newer run is inserted first: "latest" goes by created_at, not by id.
        session.add(new_classification(tiger, now, 0.93))
        session.add(new_classification(tiger, now - timedelta(hours=1), 0.12))
        session.add(new_image("e" * 64))  # not classified yet

    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT sha256, target_score, classification_decision, probabilities,"
                " classified_at FROM image_latest ORDER BY sha256"
            )
        ).all()

    assert len(rows) == 2
    tiger_row, unclassified_row = rows
    assert tiger_row.target_score == 0.93
    assert tiger_row.classification_decision == "positive"
    assert '"an Amur tiger": 0.93' in tiger_row.probabilities
    assert tiger_row.classified_at == now.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert tuple(unclassified_row) == ("e" * 64, None, None, None, None)


def test_view_has_every_image_column_plus_the_classification_summary(engine: Engine) -> None:
    with engine.connect() as connection:
        columns = connection.exec_driver_sql(f"SELECT * FROM {IMAGE_LATEST_VIEW}").keys()
    image_columns = [column.name for column in Image.__table__.columns]
    summary = ["model_name", "target_score", "classification_decision", "probabilities"]
    assert list(columns) == [*image_columns, *summary, "classified_at"]
