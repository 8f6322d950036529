"""Database backups: SQLite's online backup into a folder, pruned, on the wall clock's cron."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

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
