"""Start-up migration safety: an older database is backed up before it is upgraded."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from daemon.storage import database
from daemon.storage.database import DatabaseError, upgrade_database

NEXT_REVISION = '''"""A later schema change, for the backup test."""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE later_feature (id INTEGER PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE later_feature")
'''


def _revision(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])


@pytest.fixture
def newer_migrations(tmp_path: Path) -> Path:
    """A copy of migrations/ with one more revision, as a newer tigerwatch would ship."""
    folder = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS_DIR, folder)
    (folder / "versions" / "0003_later_feature.py").write_text(NEXT_REVISION)
    return folder


def test_database_at_previous_revision_is_backed_up_then_upgraded(
    tmp_path: Path, newer_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "tw.db"
    url = f"sqlite:///{db}"
    upgrade_database(url)
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO rejects (source_path, reason, arrived_at, state) "
            "VALUES ('/in/x.jpg', 'test row', '2026-01-01 00:00:00', 'done')"
        )
    monkeypatch.setattr(database, "MIGRATIONS_DIR", newer_migrations)

    upgrade_database(url)

    assert _revision(db) == "0003"
    backups = list(tmp_path.glob("tw.db.before-0003-*.bak"))
    assert len(backups) == 1
    assert _revision(backups[0]) == "0002"
    with sqlite3.connect(backups[0]) as connection:
        assert connection.execute("SELECT reason FROM rejects").fetchall() == [("test row",)]


def test_fresh_and_current_databases_are_not_backed_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tw.db'}"
    upgrade_database(url)
    upgrade_database(url)
    assert list(tmp_path.glob("*.bak")) == []


def test_database_from_a_newer_version_is_refused_untouched(
    tmp_path: Path, newer_migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "tw.db"
    url = f"sqlite:///{db}"
    with monkeypatch.context() as newer:
        newer.setattr(database, "MIGRATIONS_DIR", newer_migrations)
        upgrade_database(url)  # a newer tigerwatch brought it to 0003
    before = db.read_bytes()

    with pytest.raises(DatabaseError, match=r"0003.*newer tigerwatch"):
        upgrade_database(url)

    assert _revision(db) == "0003"
    assert db.read_bytes() == before
    assert list(tmp_path.glob("*.bak")) == []
