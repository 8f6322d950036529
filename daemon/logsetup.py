"""Configures logging once, at the program's edge."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamps, but plain runs and log files need them.
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Library chatter that says nothing about the station's files.
    for noisy in ("watchdog", "alembic", "PIL", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
