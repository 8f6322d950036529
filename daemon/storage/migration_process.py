"""Brings the daemon's database to head without importing Alembic: any upgrade runs in a child.

Alembic (alembic.command, Mako's templates, Pygments) is 13-16 MiB of anonymous memory that the
daemon would keep for its whole life, for one use at start-up. The daemon looks with plain SQL
whether the database is at head (the usual start: nothing else happens); otherwise a short-lived
child interpreter runs `upgrade_database` (a new file, an older revision, and every database it
refuses: a newer revision, a foreign or unreadable file), forwards its log records (the backup,
"upgraded from X to Y") to be logged here, and replies. Its DatabaseError is raised here with the
same message; a child that dies is a DatabaseError quoting the end of its output.

SIGTERM while the child migrates does not cut it: the upgrade is one SQLite transaction, often
seconds, and killing it would roll all of it back for the next start to redo from the beginning.
The daemon waits for the reply, then stops before READY as on any stop during start-up. systemd's
TimeoutStopSec still bounds it: KillMode=mixed then kills the child too, and SQLite rolls back.
"""

from __future__ import annotations

from daemon.child_interpreter import run_child
from daemon.storage.database import DatabaseError, at_head, check_foreign_keys_of
from daemon.storage.migration_child import DONE, ERROR, FAILED
from daemon.storage.urls import shown_url


def migrate_to_head(url: str) -> None:
    """Leave the database at `url` at head, creating it if need be; DatabaseError when it
    cannot be (the messages of `upgrade_database`). At head, its foreign keys are checked as
    the upgrade checks them: a row broken by hand is refused at start, not on upgrade day."""
    if at_head(url):
        check_foreign_keys_of(url)
    else:
        _upgrade_in_child(url)


def _upgrade_in_child(url: str) -> None:
    """`upgrade_database(url)` in a child interpreter (its output never reaches the daemon's
    log); its wait is logged, never cut short: see above."""
    try:
        run = run_child(
            "daemon.storage.migration_child",
            "serve",
            url,
            doing=f"migrating database {shown_url(url)}",
            stop=None,
        )
    except OSError as err:
        raise DatabaseError(
            f"database {shown_url(url)} cannot be migrated: cannot start a process to do it: {err}"
        ) from err
    if run.reply is None:
        raise DatabaseError(
            f"database {shown_url(url)} cannot be migrated: the process migrating it ended "
            f"without an answer ({run.ending}){run.output_tail}"
        )
    _outcome(url, *run.reply)


def _outcome(url: str, kind: str, body: object) -> None:
    if kind == DONE:
        return
    if kind == ERROR:
        raise DatabaseError(str(body))
    what = body if kind == FAILED else f"an unexpected answer {kind!r}"
    raise DatabaseError(f"database {shown_url(url)} cannot be migrated: {what}")
