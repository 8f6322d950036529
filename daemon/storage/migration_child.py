"""The migration child's side: a fresh interpreter upgrades the database with Alembic, replies."""

from __future__ import annotations

import contextlib
import logging
import signal
from multiprocessing.connection import Connection

from daemon.child_interpreter import LogForward
from daemon.storage.database import DatabaseError, upgrade_database

# Messages to the parent: log records any number of times (child_interpreter.LogForward), then
# one of ("done", None), ("error", DatabaseError's message), ("failed", what raised).
DONE, ERROR, FAILED = "done", "error", "failed"


def serve(connection: Connection) -> None:
    """Read the database URL, upgrade it to head, send the outcome, exit."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (it lets the
    # migration, one transaction, finish; see migration_process.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    url = connection.recv()
    # A parent killed meanwhile (SIGKILL, the OOM killer) must not abort the upgrade half way
    # through its log lines: it finishes, and the next start finds the database at head.
    forward = LogForward(connection, outlive_parent=True)
    root = logging.getLogger()
    root.addHandler(forward)
    root.setLevel(logging.INFO)
    # As the daemon's own logging setup has it (logsetup.py): Alembic's INFO lines are chatter.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        upgrade_database(url)
        reply: tuple[str, object] = (DONE, None)
    except DatabaseError as err:
        reply = (ERROR, str(err))
    except Exception as err:  # a bug or a database nobody foresaw: the parent names it
        reply = (FAILED, f"{type(err).__name__}: {err}")
    root.removeHandler(forward)
    with contextlib.suppress(OSError):  # the parent is gone: the database says the outcome
        connection.send(reply)
