"""Database backups: SQLite's online backup into a folder, pruned, on the wall clock's cron."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

import daemon.storage.backup as backup_module
from daemon.config import ConfigError, parse_config
from daemon.schedule import start_wall_clock_jobs
from daemon.storage.backup import back_up_database
from daemon.storage.database import upgrade_database


def _config(tmp_path: Path, **backup: object) -> dict[str, object]:
    return {
        "paths": {
            name: str(tmp_path / name) for name in ("inbox", "review", "archive", "quarantine")
        },
        "database": {"url": f"sqlite:///{tmp_path / 'tigerwatch.db'}", "backup": backup},
    }


def test_backup_copies_committed_rows_while_a_writer_holds_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    writer = sqlite3.connect(tmp_path / "tigerwatch.db")
    writer.execute(
        "INSERT INTO rejects (source_path, reason, arrived_at, state) "
        "VALUES ('inbox/a.jpg', 'symbolic link', '2026-12-02 03:00:00', 'done')"
    )
    writer.commit()
    writer.execute("BEGIN IMMEDIATE")  # the daemon mid-transaction: the backup must not wait
    try:
        backup = back_up_database(url, tmp_path / "backups", keep=3)
    finally:
        writer.rollback()
        writer.close()
    assert backup is not None and backup.parent == tmp_path / "backups"
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT source_path FROM rejects").fetchall() == [("inbox/a.jpg",)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert not list((tmp_path / "backups").glob(".*"))  # no partial copy left behind


def test_backups_are_pruned_to_the_newest_keep(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    folder = tmp_path / "backups"
    unrelated = folder / "notes.txt"
    made = [back_up_database(url, folder, keep=2) for _ in range(4)]
    unrelated.write_text("an administrator's file")
    made.append(back_up_database(url, folder, keep=2))
    assert sorted(folder.glob("tigerwatch-*.db")) == sorted(p for p in made[-2:] if p)
    assert unrelated.exists()


def _rows(backup: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(backup) as copy:
        return copy.execute("SELECT source_path FROM rejects").fetchall()


def _with_a_row(url: str, database: Path) -> None:
    upgrade_database(url)
    with sqlite3.connect(database) as writer:
        writer.execute(
            "INSERT INTO rejects (source_path, reason, arrived_at, state) "
            "VALUES ('inbox/a.jpg', 'symbolic link', '2026-12-02 03:00:00', 'done')"
        )


def test_a_backup_made_after_the_clock_was_set_back_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    folder = tmp_path / "backups"
    days = [datetime(2026, 12, day, 3, 30, tzinfo=UTC) for day in (10, 11, 12, 1, 2)]
    monkeypatch.setattr(backup_module, "utcnow", lambda: days.pop(0))  # set back after the 12th
    caplog.set_level(logging.INFO, logger="daemon.storage.backup")
    made = [back_up_database(url, folder, keep=2) for _ in range(5)]
    left = sorted(p.name for p in folder.glob("tigerwatch-*.db"))
    print(f"\nbackups left after the clock was set back: {left}")
    assert made[-1] is not None and made[-1].exists()  # the backup just made is never pruned
    assert len(left) == 2
    last = [r.getMessage() for r in caplog.records][-2:]
    assert last[0].startswith("database ") and "backed up to" in last[0]
    assert last[1].startswith("removed old database backup")  # after the success line


def test_pruning_leaves_another_stations_backups_in_a_shared_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tigerwatch.db'}"
    upgrade_database(url)
    folder = tmp_path / "backups"
    folder.mkdir()
    north = folder / "tigerwatch-north-20261201T033000000000Z.db"
    north.write_text("another station's backup")
    odd = folder / "tigerwatch-copy.db"
    odd.write_text("an administrator's copy")
    for _ in range(3):
        back_up_database(url, folder, keep=1)
    left = sorted(p.name for p in folder.iterdir())
    print(f"\nfiles left in the shared folder: {left}")
    assert north.exists() and odd.exists()
    assert len(left) == 3


@pytest.mark.parametrize("name", ["station#1", "100%"])
def test_a_database_path_with_uri_characters_is_backed_up_whole(tmp_path: Path, name: str) -> None:
    database = tmp_path / name / "tigerwatch.db"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    _with_a_row(url, database)
    backup = back_up_database(url, tmp_path / "backups", keep=3)
    assert backup is not None
    rows = _rows(backup)
    print(f"\n[{name}] rows in the backup: {rows}")
    assert rows == [("inbox/a.jpg",)]


def test_backup_is_off_by_default_and_a_bad_schedule_is_refused(tmp_path: Path) -> None:
    assert (
        parse_config(_config(tmp_path), source=tmp_path / "t.yaml").database.backup.folder is None
    )
    assert (
        start_wall_clock_jobs(parse_config(_config(tmp_path), source=tmp_path / "t.yaml")) is None
    )
    with pytest.raises(ConfigError, match=r"database\.backup\.schedule"):
        parse_config(
            _config(tmp_path, folder="backups", schedule="at night"), source=tmp_path / "t.yaml"
        )


def test_the_backup_job_runs_on_its_cron_schedule(tmp_path: Path) -> None:
    config = parse_config(
        _config(tmp_path, folder=str(tmp_path / "b"), schedule="30 3 * * *"),
        source=tmp_path / "t.yaml",
    )
    scheduler = start_wall_clock_jobs(config)
    assert scheduler is not None
    try:
        [job] = scheduler.get_jobs()
        due = job.next_run_time
        assert (due.hour, due.minute, due.second) == (3, 30, 0)
    finally:
        scheduler.shutdown(wait=True)
