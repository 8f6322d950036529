"""Start-up migration in a child interpreter: the daemon never imports Alembic, and every outcome
of `upgrade_database` (upgrade, backup, log line, refusals) reaches it unchanged."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import Pipe
from pathlib import Path

import psutil
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from daemon import child_interpreter
from daemon.storage import database
from daemon.storage.database import DatabaseError, head_revision, upgrade_database
from daemon.storage.migration_process import migrate_to_head
from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    REPO_ROOT,
    make_station,
    start_daemon_process,
    wait_until,
)

HEAD = head_revision()
PREVIOUS = ScriptDirectory.from_config(database.alembic_config()).get_revision(HEAD).down_revision
assert isinstance(PREVIOUS, str)


def revision(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def at_previous_revision(path: Path) -> str:
    """A database one revision behind head, as the last tigerwatch left it."""
    url = f"sqlite:///{path}"
    upgrade_database(url)
    engine = database.create_migration_engine(url)
    try:
        with engine.begin() as connection:
            command.downgrade(database.alembic_config(connection), PREVIOUS)
    finally:
        engine.dispose()
    assert revision(path) == PREVIOUS
    return url


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the database's write lock: a migration waits for it (busy_timeout)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def migration_children(pid: int) -> list[psutil.Process]:
    return [child for child in psutil.Process(pid).children() if _migrates(child)]


def _migrates(process: psutil.Process) -> bool:
    try:
        return "migration_child" in " ".join(process.cmdline())
    except psutil.Error:  # a child that has just ended (the loader's, say)
        return False


# --- the daemon process ---------------------------------------------------------------------------

_AT_READY = (
    "import sys, json, threading\n"
    "from pathlib import Path\n"
    "import daemon.service as service\n"
    "from daemon.config import load_config\n"
    "stop = threading.Event()\n"
    "logged_ready = service._log_ready\n"
    "def at_ready(*args):\n"
    "    logged_ready(*args)\n"
    "    print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic')))\n"
    "    stop.set()\n"
    "service._log_ready = at_ready\n"
    "print(json.dumps(service.run_daemon(load_config(Path(sys.argv[1])), stop=stop)))\n"
)


def test_the_daemon_never_imports_alembic_on_a_new_database_nor_on_one_at_head(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A fresh interpreter, as the daemon is one, runs start-up to READY twice: once creating
    the database (through the child), once finding it at head (no child at all)."""
    station = make_station(tmp_path / "station", tiny_model_dir)
    for start in ("new database", "database at head"):
        run = subprocess.run(
            [sys.executable, "-c", _AT_READY, str(station.config_path)],
            cwd=REPO_ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            check=False,
            timeout=PROCESS_START_TIMEOUT,
        )

        assert run.returncode == 0, run.stderr
        alembic_modules, code = (json.loads(line) for line in run.stdout.splitlines()[-2:])
        assert (alembic_modules, code) == ([], 0), start
        assert revision(station.db_path) == HEAD


def test_a_database_at_head_starts_no_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'current.db'}"
    upgrade_database(url)
    # Any child would now die at once: only a start without one can succeed.
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import sys\nsys.exit(9)")

    migrate_to_head(url)

    with pytest.raises(DatabaseError, match="exit code 9"):
        migrate_to_head(f"sqlite:///{tmp_path / 'new.db'}")


def test_a_database_at_head_with_a_broken_foreign_key_is_refused_as_the_upgrade_refused_it(
    tmp_path: Path,
) -> None:
    # hX4: every start used to run the upgrade's foreign-key check (a no-op upgrade); skipping
    # Alembic at head must not skip it, or a row broken by hand is found only on upgrade day.
    path = tmp_path / "tigerwatch.db"
    upgrade_database(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:  # foreign keys are off in a plain sqlite3
        connection.execute(
            "INSERT INTO duplicates (image_id, source_path, state, arrived_at)"
            " VALUES (999, '/x.jpg', 'routing', '2026-12-07 00:00:00')"
        )

    message = refusal(f"sqlite:///{path}", migrate_to_head)

    assert message == "1 rows break a foreign key, e.g. duplicates rowid 1 -> images"
    assert revision(path) == HEAD


def test_a_child_still_migrating_is_said_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import time\ntime.sleep(1.5)")
    monkeypatch.setattr(child_interpreter, "STILL_WORKING_SECONDS", 0.3)
    path = tmp_path / "tigerwatch.db"

    with caplog.at_level(logging.INFO, logger="daemon"):
        message = refusal(f"sqlite:///{path}", migrate_to_head)

    said = [r.getMessage() for r in caplog.records]
    started = f"migrating database sqlite:///{path} in a child process"
    assert any(m.startswith(started) for m in said)
    assert any(m.startswith(f"still migrating database sqlite:///{path} after") for m in said)
    assert "ended without an answer (exit code 0)" in message


# --- what the child does, as the daemon sees it ---------------------------------------------------


def test_a_new_database_is_created_at_head(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tigerwatch.db"  # its folder too

    migrate_to_head(f"sqlite:///{path}")

    assert revision(path) == HEAD


def test_an_older_database_is_backed_up_and_upgraded_with_the_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tigerwatch.db"
    url = at_previous_revision(path)
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="daemon"):
        migrate_to_head(url)

    assert revision(path) == HEAD
    [backup] = tmp_path.glob(f"tigerwatch.db.before-{HEAD}-*.bak")
    assert revision(backup) == PREVIOUS
    logged = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert logged[0][2].startswith(f"migrating database sqlite:///{path} in a child process")
    assert logged[1:] == [
        (
            "daemon.storage.database",
            logging.INFO,
            f"database {path} backed up to {backup} before migrating",
        ),
        (
            "daemon.storage.database",
            logging.INFO,
            f"database {path} upgraded from {PREVIOUS} to {HEAD}",
        ),
    ]


def refusal(url: str, call: Callable[[str], None]) -> str:
    """The DatabaseError message `call(url)` raises."""
    with pytest.raises(DatabaseError) as error:
        call(url)
    return str(error.value)


def test_a_database_from_a_newer_tigerwatch_is_refused_untouched_with_the_same_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tigerwatch.db"
    url = f"sqlite:///{path}"
    upgrade_database(url)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    before = schema(path)

    in_child = refusal(url, migrate_to_head)

    assert in_child == refusal(url, upgrade_database)
    assert "9999_from_the_future" in in_child and "newer tigerwatch" in in_child
    assert schema(path) == before


def test_a_foreign_database_is_refused_untouched_with_the_same_text(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    url = f"sqlite:///{path}"

    in_child = refusal(url, migrate_to_head)

    assert in_child == refusal(url, upgrade_database)
    assert "photos" in in_child and "not a tigerwatch database" in in_child
    assert [name for name, _ in schema(path)] == ["photos"]


def test_a_file_that_is_no_database_is_refused_with_the_same_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database, just notes\n" * 100)
    url = f"sqlite:///{path}"

    in_child = refusal(url, migrate_to_head)

    assert in_child == refusal(url, upgrade_database)
    assert in_child.startswith(f"database {url} cannot be opened (")


def test_a_failure_nobody_foresaw_is_a_database_error_naming_it(tmp_path: Path) -> None:
    # No such DBAPI driver is installed: upgrade_database raises ImportError, not DatabaseError.
    url = "postgresql+nosuchdriver://station@localhost/tigerwatch"

    message = refusal(url, migrate_to_head)

    assert message.startswith("database postgresql+nosuchdriver://station@localhost/tigerwatch")
    assert "cannot be migrated" in message and "nosuchdriver" in message


# --- a child that dies, and SIGTERM ---------------------------------------------------------------


def test_a_child_that_dies_at_once_is_a_database_error_quoting_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        child_interpreter,
        "_BOOTSTRAP",
        "import sys\nsys.stderr.write('out of memory\\n')\nsys.exit(7)",
    )
    path = tmp_path / "tigerwatch.db"

    message = refusal(f"sqlite:///{path}", migrate_to_head)

    assert message.startswith(f"database sqlite:///{path} cannot be migrated: ")
    assert "exit code 7" in message and "out of memory" in message


def test_a_child_killed_mid_way_is_a_database_error_and_leaves_the_database_as_it_was(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tigerwatch.db"
    url = at_previous_revision(path)
    raised: list[BaseException] = []

    def migrate() -> None:
        try:
            migrate_to_head(url)
        except DatabaseError as err:
            raised.append(err)

    with write_locked(path):  # the child waits for the lock inside upgrade_database
        thread = threading.Thread(target=migrate, daemon=True)
        thread.start()
        wait_until(lambda: bool(migration_children(os.getpid())), "the migration child")
        for child in migration_children(os.getpid()):
            child.send_signal(signal.SIGKILL)
        thread.join(timeout=60)

    assert not thread.is_alive()
    assert len(raised) == 1
    assert "cannot be migrated" in str(raised[0]) and "killed by signal 9" in str(raised[0])
    assert revision(path) == PREVIOUS


def test_sigterm_while_the_child_migrates_lets_it_finish_then_stops(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The decision in migration_process.py: the upgrade is not cut, the daemon exits 0 before
    READY, and the next start finds the database at head."""
    station = make_station(tmp_path / "station", tiny_model_dir)
    at_previous_revision(station.db_path)
    log_path = tmp_path / "daemon.log"

    with write_locked(station.db_path):
        process = start_daemon_process(station, log_path)
        try:
            wait_until(
                lambda: bool(migration_children(process.pid)),
                "the daemon's migration child",
                PROCESS_START_TIMEOUT,
            )
            process.send_signal(signal.SIGTERM)
        except BaseException:
            process.kill()
            raise
    code = process.wait(timeout=PROCESS_START_TIMEOUT)

    log = log_path.read_text(errors="replace")
    assert code == 0, log
    assert f"upgraded from {PREVIOUS} to {HEAD}" in log
    assert "stopped during start-up" in log and "ready in" not in log
    assert revision(station.db_path) == HEAD


def test_a_child_whose_parent_is_gone_still_finishes_the_upgrade(tmp_path: Path) -> None:
    # hX4: the daemon killed (SIGKILL, the OOM killer) while its child migrates; the child's
    # next log line hit a broken pipe and aborted the upgrade, leaving a backup for nothing.
    path = tmp_path / "tigerwatch.db"
    url = at_previous_revision(path)
    parent_end, child_end = Pipe()
    child = subprocess.Popen(
        child_interpreter.child_command(
            "daemon.storage.migration_child", "serve", child_end.fileno()
        ),
        pass_fds=(child_end.fileno(),),
    )
    child_end.close()
    parent_end.send(list(sys.path))
    parent_end.send(url)
    parent_end.close()  # the parent is gone before the child logs anything

    assert child.wait(timeout=PROCESS_START_TIMEOUT) == 0
    assert revision(path) == HEAD


def test_a_version_table_naming_two_revisions_is_refused_in_the_operators_words(
    tmp_path: Path,
) -> None:
    # hX4: the refusal was Alembic's own text ("please use get_current_heads()").
    path = tmp_path / "tigerwatch.db"
    upgrade_database(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO alembic_version VALUES (?)", (PREVIOUS,))
    before = schema(path)

    message = refusal(f"sqlite:///{path}", migrate_to_head)

    shown = ", ".join(sorted((HEAD, PREVIOUS)))
    assert message == (
        f"database {path} names 2 schema revisions at once ({shown}) in its alembic_version "
        "table, which tigerwatch never writes: it was edited by hand or by another tool; "
        "restore a backup"
    )
    assert schema(path) == before
