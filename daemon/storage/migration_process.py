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

import contextlib
import logging
import subprocess
import sys
import tempfile
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import IO

from daemon.child_interpreter import ChildWait, child_command
from daemon.storage.database import DatabaseError, at_head, check_foreign_keys_of
from daemon.storage.migration_child import DONE, ERROR, FAILED, LOG
from daemon.storage.urls import shown_url

OUTPUT_TAIL_CHARS = 600  # of a child that died, quoted in the error
_EXIT_GRACE = 2.0  # a child that replied or died gets this long to exit before it is killed


def migrate_to_head(url: str) -> None:
    """Leave the database at `url` at head, creating it if need be; DatabaseError when it
    cannot be (the messages of `upgrade_database`). At head, its foreign keys are checked as
    the upgrade checks them: a row broken by hand is refused at start, not on upgrade day."""
    if at_head(url):
        check_foreign_keys_of(url)
    else:
        _upgrade_in_child(url)


def _upgrade_in_child(url: str) -> None:
    """`upgrade_database(url)` in a child interpreter.

    The child's stdout and stderr go to a temporary file, not to the daemon's log; only the
    file's tail of a dead child is shown.
    """
    with tempfile.TemporaryFile() as output:
        process, connection = _start(url, output)
        try:
            connection.send(list(sys.path))
            connection.send(url)
            reply = _reply(
                connection, ChildWait(f"migrating database {shown_url(url)}", process.pid)
            )
        finally:
            connection.close()
            ending = _ended(process)
        if reply is None:
            raise DatabaseError(
                f"database {shown_url(url)} cannot be migrated: the process migrating it ended "
                f"without an answer ({ending}){_tail(output)}"
            )
    _outcome(url, *reply)


def _start(url: str, output: IO[bytes]) -> tuple[subprocess.Popen[bytes], Connection]:
    parent_end, child_end = Pipe()
    try:
        process = subprocess.Popen(
            child_command("daemon.storage.migration_child", "serve", child_end.fileno()),
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    except OSError as err:
        parent_end.close()
        raise DatabaseError(
            f"database {shown_url(url)} cannot be migrated: cannot start a process to do it: {err}"
        ) from err
    finally:
        child_end.close()
    return process, parent_end


def _reply(connection: Connection, wait: ChildWait) -> tuple[str, object] | None:
    """The child's final message, its log records logged here on the way; None when it died.
    The wait is logged (a child stuck on a hung disk shows), never cut short: see above."""
    try:
        while True:
            wait.readable(connection)
            kind, body = connection.recv()
            if kind != LOG:
                return kind, body
            name, level, message = body
            logging.getLogger(name).log(level, "%s", message)
    except (EOFError, OSError):
        return None


def _outcome(url: str, kind: str, body: object) -> None:
    if kind == DONE:
        return
    if kind == ERROR:
        raise DatabaseError(str(body))
    what = body if kind == FAILED else f"an unexpected answer {kind!r}"
    raise DatabaseError(f"database {shown_url(url)} cannot be migrated: {what}")


def _ended(process: subprocess.Popen[bytes]) -> str:
    """Wait for the child (killed if it lingers) and say how it ended."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_EXIT_GRACE)
    if process.poll() is None:
        process.kill()
        process.wait()
    code = process.returncode
    return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"


def _tail(output: IO[bytes]) -> str:
    output.seek(0)
    text = output.read().decode(errors="replace").strip()
    return f": {text[-OUTPUT_TAIL_CHARS:]}" if text else ""
