"""Runs every doctor check on a configuration, in the order an operator fixes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from daemon.config import Config
from daemon.doctor import folders, setup
from daemon.doctor.verdicts import Finding
from daemon.storage.urls import sqlite_file

DEFAULT_UNIT = Path("/etc/systemd/system/tigerwatch.service")


def station_findings(config: Config, unit: Path = DEFAULT_UNIT) -> Iterator[Finding]:
    yield from _inbox_findings(config)
    for role, folder in config.paths.destinations.items():
        yield folders.folder_access(role, folder, created_on_use=True)
        yield folders.local_disk(role, folder)
        yield folders.free_space(role, folder)
    database = sqlite_file(config.database.url)
    if database is not None:
        yield folders.folder_access("database folder", database.parent, created_on_use=True)
        yield folders.local_disk("database folder", database.parent)
    yield setup.model_folder(config.model.name_or_path)
    cpu = setup.cpu_precision()
    yield cpu
    yield setup.configured_precision(config, cpu)
    yield from setup.unit_file(unit, config)


def _inbox_findings(config: Config) -> Iterator[Finding]:
    for inbox in config.paths.inbox:
        yield folders.folder_access("inbox", inbox.path)
        if not inbox.path.is_dir():
            continue
        yield folders.inbox_sharing(inbox.path, config.files.group)
        yield folders.local_disk("inbox", inbox.path, polling=inbox.polling)
        for subfolder in folders.inbox_subfolders(inbox.path):
            yield folders.folder_access("inbox sub-folder", subfolder)
