"""Folder checks: the daemon's user can create, rename and delete; group, setgid, disk, mounts."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from daemon.doctor.verdicts import Finding, Level, fail, ok, warn

PROBE_NAME = ".tigerwatch-doctor-{pid}"
# File systems where inotify misses changes made by other machines, or renames are not atomic.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "ceph", "glusterfs"}
)
LOW_FREE_BYTES = 2 << 30  # under 2 GiB: a card or two of frames
FULL_FREE_BYTES = 200 << 20  # under 200 MiB: moves will fail soon
LOW_FREE_INODES = 10_000


def folder_access(role: str, folder: Path, *, created_on_use: bool = False) -> Finding:
    """Create, rename and delete a probe file in `folder`, as the daemon does with frames.

    A destination the daemon creates on its first move may be absent: then the nearest
    existing folder above it must take the probe."""
    check = f"{role} {folder}: create, rename, delete"
    if not folder.is_dir():
        fix = f"mkdir -p {folder} and give it to the daemon's user"
        parent = existing_ancestor(folder)
        if not created_on_use or parent is None:
            return fail(check, "does not exist", fix)
        found = folder_access(role, parent)
        if found.level != Level.OK:
            return fail(check, f"does not exist and cannot be created in {parent}", fix)
        return ok(check, f"absent: the daemon creates it in {parent}")
    probe = folder / PROBE_NAME.format(pid=os.getpid())
    renamed = probe.with_name(probe.name + ".renamed")
    try:
        probe.write_bytes(b"")
        probe.rename(renamed)
        renamed.unlink()
    except OSError as err:
        for leftover in (probe, renamed):
            leftover.unlink(missing_ok=True)
        return fail(check, err.strerror or str(err), _access_fix(folder))
    return ok(check)


def existing_ancestor(folder: Path) -> Path | None:
    return next((parent for parent in folder.parents if parent.is_dir()), None)


def _access_fix(folder: Path) -> str:
    return (
        f"chown tigerwatch:camtrap {folder} and chmod g+rwx {folder} "
        "(see README, Running under systemd)"
    )


def inbox_subfolders(inbox: Path) -> Iterator[Path]:
    """Sub-folders an uploader already made (an FTP account's umask decides their mode)."""
    for folder, subfolders, _files in os.walk(inbox):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if Path(folder) != inbox:
            yield Path(folder)


def inbox_sharing(inbox: Path, group: int | None) -> Finding:
    """The README's inbox: setgid, so uploads keep the shared group the daemon can write."""
    check = f"inbox {inbox}: setgid group"
    try:
        status = inbox.stat()
    except OSError as err:
        return fail(check, err.strerror or str(err), f"mkdir -p {inbox}")
    name = _group_name(status.st_gid)
    if not status.st_mode & stat.S_ISGID:
        fix = f"chmod g+s {inbox} so uploads keep the group {name}"
        return warn(check, f"setgid bit not set (group {name})", fix)
    if group is not None and status.st_gid != group:
        want = _group_name(group)
        return warn(check, f"group {name}, files.group is {want}", f"chgrp {want} {inbox}")
    return ok(check, f"group {name}, setgid")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the file system holding `path` (the deepest mount point above it)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype = line.split(" - ", 1)[1].split()[0]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and (best is None or len(mount_point) > best[0]):
            best = (len(mount_point), fstype)
    return best[1] if best else None


def local_disk(role: str, folder: Path, *, polling: bool = False) -> Finding:
    check = f"{role} {folder}: file system"
    fstype = filesystem_type(folder)
    if fstype in NETWORK_FILESYSTEMS and not polling:
        fix = (
            "set polling: true for this inbox"
            if role == "inbox"
            else "keep the data on a local disk (renames and fsync on network mounts are not safe)"
        )
        return warn(check, f"a network mount ({fstype})", fix)
    return ok(check, fstype or "unknown")


def free_space(role: str, folder: Path) -> Finding:
    check = f"{role} {folder}: free space"
    try:
        usage = os.statvfs(folder if folder.is_dir() else existing_ancestor(folder) or folder)
    except OSError as err:
        return fail(check, err.strerror or str(err), f"mkdir -p {folder}")
    free = usage.f_bavail * usage.f_frsize
    inodes = usage.f_favail
    detail = f"{free / (1 << 20):.0f} MiB, {inodes} inodes free"
    fix = "free disk space or move the folder to a larger disk"
    if free < FULL_FREE_BYTES or (usage.f_files and inodes == 0):
        return fail(check, detail, fix)
    if free < LOW_FREE_BYTES or (usage.f_files and inodes < LOW_FREE_INODES):
        return warn(check, detail, fix)
    return ok(check, detail)
