"""Gives the files and folders the daemon creates the configured group and mode."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ownership:
    group_id: int | None = None
    file_mode: int | None = None

    @property
    def directory_mode(self) -> int | None:
        """The file mode plus search ("x") wherever read ("r") is allowed: 0640 -> 0750."""
        if self.file_mode is None:
            return None
        readable = self.file_mode & 0o444
        return self.file_mode | (readable >> 2)

    def apply(self, path: Path, *, up_to: Path) -> None:
        """Set group and mode on `path` and on its folders below `up_to` (the destination root).

        A failure is logged, never raised: the file is safely in place, only less accessible.
        """
        if self.group_id is None and self.file_mode is None:
            return
        self._apply_one(path)
        folder = path.parent
        while folder != up_to and up_to in folder.parents:
            self._apply_one(folder)
            folder = folder.parent

    def _apply_one(self, path: Path) -> None:
        try:
            info = path.lstat()
            if self.group_id is not None and info.st_gid != self.group_id:
                os.chown(path, -1, self.group_id, follow_symlinks=False)
            mode = self._mode_for(info)
            is_link = stat.S_ISLNK(info.st_mode)
            if mode is not None and not is_link and stat.S_IMODE(info.st_mode) != mode:
                path.chmod(mode)
        except OSError as err:
            logger.warning("%s: could not set group/mode: %s", path, err)

    def _mode_for(self, info: os.stat_result) -> int | None:
        if not stat.S_ISDIR(info.st_mode):
            return self.file_mode
        if self.directory_mode is None:
            return None
        # A setgid folder (the README's 2750 roots) passes the staff group on to what is made
        # in it: keep the bit, or the next day's files lose the group.
        return self.directory_mode | (info.st_mode & stat.S_ISGID)
