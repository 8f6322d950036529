"""Database access: SQLite engines set up as a durable queue, sessions and Alembic migrations."""

from __future__ import annotations

import ast
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from daemon.storage.schema import utcnow
from daemon.storage.urls import shown_url, sqlite_file

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: `tigerwatch status` opens the database without it
# (importing it is about 0.2 s of CPU, a quarter of the command; README "Throughput", growth).

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
BUSY_TIMEOUT_MS = 30_000

_ConnectHook = Callable[[DBAPIConnection, ConnectionPoolEntry], None]

# Execution option read by the "begin" hook: how a transaction starts. IMMEDIATE by default.
_BEGIN_MODE_OPTION = "tigerwatch_begin_mode"


class DatabaseError(Exception):
    """The database cannot be used as it is (unknown revision, foreign file, broken integrity)."""


def create_db_engine(url: str) -> Engine:
    """An engine for the daemon: WAL, FULL sync, foreign keys on, every transaction IMMEDIATE.

    IMMEDIATE takes SQLite's write lock at BEGIN, so a transaction that reads and then writes
    waits for another writer (busy_timeout) instead of failing with "database is locked" when
    it tries to upgrade its read lock. For read-only work that must not wait, use `deferred()`.
    """
    return _build_engine(url, foreign_keys=True)


def create_migration_engine(url: str) -> Engine:
    """Like `create_db_engine`, with foreign keys off, for Alembic.

    Batch migrations rebuild a table (copy, DROP, rename); with enforcement on, dropping
    `images` would cascade-delete every classification. `check_foreign_keys` runs instead,
    before the migration commits.
    """
    return _build_engine(url, foreign_keys=False)


def deferred(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions begin DEFERRED: for read-only work."""
    return engine.execution_options(**{_BEGIN_MODE_OPTION: "DEFERRED"})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to `engine`.

    expire_on_commit is off: reading an attribute after commit would otherwise reload it,
    silently starting a new (IMMEDIATE, write-locking) transaction.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def check_foreign_keys(connection: Connection) -> None:
    """Raise DatabaseError if any row breaks a foreign key (SQLite only; a no-op elsewhere)."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise DatabaseError(
            f"{len(broken)} rows break a foreign key, e.g. {table} rowid {rowid} -> {parent}"
        )


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configuration without alembic.ini; env.py migrates `connection` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise DatabaseError(f"{MIGRATIONS_DIR}: no migration revisions found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

    with deferred(engine).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def open_migrated_database(url: str) -> Engine:
    """An engine on an existing database at head; DatabaseError (naming it) otherwise."""
    shown = shown_url(url)
    # Connecting would create an empty SQLite file (and its folder): look before connecting.
    file = sqlite_file(url)
    if file is not None and not file.exists():
        raise DatabaseError(f"database {file} does not exist")
    engine = create_db_engine(url)
    try:
        current = _stored_revision(engine)
    except SQLAlchemyError as err:
        engine.dispose()
        reason = str(err).splitlines()[0]
        raise DatabaseError(f"database {shown} cannot be read ({reason})") from err
    head = declared_head()
    if current != head:
        engine.dispose()
        found = "no tigerwatch schema" if current is None else f"schema revision {current!r}"
        raise DatabaseError(f"database {shown} has {found}; this version needs {head!r}")
    return engine


def at_head(url: str) -> bool:
    """True when the database exists and is at head, read with plain SQL (no Alembic).

    False when it must be created or upgraded, and when it cannot be read at all: deciding
    what is wrong, in the operator's words, is `upgrade_database`'s job.
    """
    file = sqlite_file(url)
    if file is not None and not file.exists():
        return False  # connecting would create it, and its folder
    try:
        engine = create_db_engine(url)
    except (SQLAlchemyError, ImportError, OSError):  # a bad URL, a missing driver
        return False
    try:
        return _stored_revision(engine) == declared_head()
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def check_foreign_keys_of(url: str) -> None:
    """`check_foreign_keys` on the database at `url`, in a transaction of its own."""
    engine = create_db_engine(url)
    try:
        with deferred(engine).connect() as connection:
            check_foreign_keys(connection)
    except OperationalError as err:
        reason = str(err.orig or err).splitlines()[0]
        raise DatabaseError(f"database {shown_url(url)} cannot be checked ({reason})") from err
    finally:
        engine.dispose()


def declared_head() -> str:
    """`head_revision()` read from the revision files' own `revision` and `down_revision`
    assignments, without importing Alembic; Alembic answers when they are not that plain."""
    downs: set[object] = set()
    revisions = []
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        declared = _declared(path)
        down = declared.get("down_revision")
        downs |= set(down) if isinstance(down, tuple | list) else {down}
        revisions.append(declared.get("revision"))
    heads = [revision for revision in revisions if revision not in downs]
    if len(heads) == 1 and all(isinstance(revision, str) for revision in revisions):
        return str(heads[0])
    return head_revision()


def _declared(path: Path) -> dict[str, object]:
    """The literal `revision` and `down_revision` of one revision file."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value:
            with contextlib.suppress(ValueError):
                found[target.id] = ast.literal_eval(value)
    return found


def _stored_revision(engine: Engine) -> str | None:
    """What `current_revision` says, read with plain SQL (no Alembic); several rows (branches
    Alembic would refuse) come back joined, so they match no head."""
    with deferred(engine).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    return ", ".join(sorted(str(row[0]) for row in rows)) or None


def upgrade_database(url: str) -> None:
    """Migrate the database at `url` to head, in one transaction; a no-op when already there.

    Raises DatabaseError, leaving the database untouched, when it is at a revision this code
    does not know (written by a newer tigerwatch) or holds tables but was never migrated.
    """
    from alembic import command

    engine = create_migration_engine(url)
    try:
        # One IMMEDIATE transaction: two daemons starting together migrate one after the other.
        with engine.begin() as connection:
            before = _known_revision(connection, url)
            if before is not None and before != head_revision():
                backup_sqlite_file(url, suffix=f"before-{head_revision()}")
            command.upgrade(alembic_config(connection), "head")
    except SQLAlchemyError as err:
        # Not a database, unreadable, a read-only folder: one line for the operator.
        reason = str(err.orig if isinstance(err, DBAPIError) else err).splitlines()[0]
        raise DatabaseError(f"database {shown_url(url)} cannot be opened ({reason})") from err
    finally:
        engine.dispose()
    after = head_revision()
    if before != after:
        logger.info("database %s upgraded from %s to %s", _describe(url), before, after)


def backup_sqlite_file(url: str, *, suffix: str) -> Path | None:
    """Copy a SQLite database file beside itself with SQLite's online backup; None if not SQLite.

    Safe while this process holds the write lock: the backup reads through its own connection,
    which WAL lets see the last committed state.
    """
    database = make_url(url).database
    if make_url(url).get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    source = Path(database)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = source.with_name(f"{source.name}.{suffix}-{stamp}.bak")
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
    logger.info("database %s backed up to %s before migrating", source, target)
    return target


def _known_revision(connection: Connection, url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    _refuse_several_revisions(connection, url)
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None:
        _refuse_foreign_database(connection, url)
        return None
    known = {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }
    if current not in known:
        raise DatabaseError(
            f"database {_describe(url)} is at revision {current!r}, unknown to this version "
            f"(newest known: {head_revision()!r}); it was written by a newer tigerwatch: "
            "upgrade tigerwatch or restore a backup"
        )
    return current


def _refuse_several_revisions(connection: Connection, url: str) -> None:
    """tigerwatch's schema is one line of revisions: a version table naming several (edited by
    hand, or by another tool) is refused in the operator's words, not Alembic's."""
    if not inspect(connection).has_table("alembic_version"):
        return
    rows = [
        str(row[0]) for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")
    ]
    if len(rows) > 1:
        named = ", ".join(sorted(rows))
        raise DatabaseError(
            f"database {_describe(url)} names {len(rows)} schema revisions at once ({named}) in "
            "its alembic_version table, which tigerwatch never writes: it was edited by hand or "
            "by another tool; restore a backup"
        )


def _refuse_foreign_database(connection: Connection, url: str) -> None:
    tables = [name for name in inspect(connection).get_table_names() if name != "alembic_version"]
    if tables:
        raise DatabaseError(
            f"database {_describe(url)} has tables ({', '.join(sorted(tables))}) but no migration "
            "history: not a tigerwatch database, or one created without Alembic"
        )


def _build_engine(url: str, *, foreign_keys: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed)
    _create_parent_folder(parsed)
    engine = create_engine(parsed)
    event.listen(engine, "connect", _sqlite_connect_hook(foreign_keys, _describe(url)))
    event.listen(engine, "begin", _begin)
    return engine


def _sqlite_connect_hook(foreign_keys: bool, description: str) -> _ConnectHook:
    def on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        connection = cast(sqlite3.Connection, dbapi_connection)
        # pysqlite's own BEGIN is always DEFERRED and skipped before SELECTs: switch it off
        # and emit BEGIN in `_begin` (the recipe in SQLAlchemy's SQLite dialect docs).
        connection.isolation_level = None
        # busy_timeout first, so that switching to WAL waits for other connections.
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        journal_mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        mode = None if journal_mode is None else journal_mode[0]
        if mode not in ("wal", "memory"):
            logger.warning(
                "database %s: journal_mode is %s, not wal (on a network filesystem?)",
                description,
                mode,
            )

    return on_connect


def _begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_BEGIN_MODE_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def _create_parent_folder(url: URL) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _describe(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)
