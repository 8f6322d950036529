"""Gives the files and folders the daemon creates the configured group and mode."""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class OwnershipError(Exception):
    """`files.group` or `files.mode` cannot be applied in a destination: a start-up error."""


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

    def check_applicable(self, folders: Iterable[Path]) -> None:
        """Give a probe file in each folder the group and mode; OwnershipError when refused.

        Found at start-up, a group the daemon's user is not in (chgrp is EPERM) or a filesystem
        without Unix modes is one clear error, not a warning for every file later.
        """
        if self.group_id is None and self.file_mode is None:
            return
        for folder in dict.fromkeys(folders):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd, probe = tempfile.mkstemp(prefix=".tigerwatch-probe-", dir=folder)
            except OSError:
                continue  # not about ownership: the router reports an unusable destination
            try:
                self._probe(fd, folder)
            finally:
                os.close(fd)
                Path(probe).unlink()

    def _probe(self, fd: int, folder: Path) -> None:
        if self.group_id is not None:
            try:
                os.fchown(fd, -1, self.group_id)
            except OSError as err:
                raise OwnershipError(
                    f"files.group: {_group_name(self.group_id)}: cannot give files in {folder} "
                    f"this group: {err.strerror}{_not_a_member(self.group_id, err)}"
                ) from None
        if self.file_mode is not None:
            try:
                os.fchmod(fd, self.file_mode)
                applied = stat.S_IMODE(os.fstat(fd).st_mode)
            except OSError as err:
                applied, reason = None, err.strerror
            else:
                reason = f"the filesystem keeps it at {applied:04o}"
            if applied != self.file_mode:
                raise OwnershipError(
                    f"files.mode: {self.file_mode:04o}: cannot be given to files in {folder}: "
                    f"{reason}"
                )

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


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _not_a_member(gid: int, err: OSError) -> str:
    if err.errno != errno.EPERM or gid == os.getegid() or gid in os.getgroups():
        return ""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    return f" (the daemon's user {user} is not a member of it)"
