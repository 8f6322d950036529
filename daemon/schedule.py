"""Wall-clock jobs (the database backup) on APScheduler's cron trigger, beside the daemon."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon.config import Config
from daemon.storage.backup import back_up_database

logger = logging.getLogger(__name__)


def start_wall_clock_jobs(config: Config) -> BackgroundScheduler | None:
    """Start the backup job when a backup folder is configured; None when nothing is due.

    These jobs belong to the wall clock ("03:30 every night"), unlike the rescan and the
    quiet period, which run on the monotonic clock: a clock set back only delays them.
    """
    backup = config.database.backup
    if backup.folder is None:
        return None
    scheduler = BackgroundScheduler(
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
    )
    scheduler.add_job(
        _back_up,
        CronTrigger.from_crontab(backup.schedule),
        args=(config,),
        id="database-backup",
    )
    scheduler.start()
    logger.info("database backups to %s on schedule '%s'", backup.folder, backup.schedule)
    return scheduler


def _back_up(config: Config) -> None:
    backup = config.database.backup
    assert backup.folder is not None  # the job exists only with a folder
    try:
        back_up_database(config.database.url, backup.folder, keep=backup.keep)
    except Exception:
        # A failed backup (full disk) must not stop the daemon; the next run tries again.
        logger.exception("database backup to %s failed", backup.folder)
