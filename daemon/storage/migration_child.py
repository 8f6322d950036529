"""The migration child's side: a fresh interpreter upgrades the database with Alembic, replies."""

from __future__ import annotations

import contextlib
import logging
import signal
from multiprocessing.connection import Connection

from daemon.storage.database import DatabaseError, upgrade_database

# Messages to the parent: ("log", (logger name, level, message)) any number of times, then one
# of ("done", None), ("error", DatabaseError's message), ("failed", what raised).
LOG, DONE, ERROR, FAILED = "log", "done", "error", "failed"


def serve(connection: Connection) -> None:
    """Read the database URL, upgrade it to head, send the outcome, exit."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (it lets the
    # migration, one transaction, finish; see migration_process.py).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    url = connection.recv()
    forward = _LogForward(connection)
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


class _LogForward(logging.Handler):
    """Sends log records to the parent as they happen (the backup is logged before the
    upgrade starts, not after), so they reach the daemon's log with its format and level."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(logging.INFO)
        self._connection = connection

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock here: one record at a time goes down the pipe. A
        # parent killed meanwhile (SIGKILL, the OOM killer) must not abort the upgrade half
        # way through its log lines: it finishes, and the next start finds the database at head.
        with contextlib.suppress(OSError):
            self._connection.send((LOG, (record.name, record.levelno, record.getMessage())))
