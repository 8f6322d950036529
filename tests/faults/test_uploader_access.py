"""Issue 10, point 7: the account that uploaded a frame cannot change it once it is filed.

A hard link keeps the uploader's inode, and its owner may write to it whatever the folder's
mode: the daemon places its own verified copy of a file another account owns.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
    sha256_of,
)
from tests.faults.fault_kit import noise_jpeg, report, wait_until

pytestmark = pytest.mark.fault

UPLOADER_UID = 65534  # "nobody": the FTP account in this test


def _uploader_may_open(folder: Path, name: str, flags: int, groups: list[int]) -> bool:
    """Whether the uploading account (in the staff ``groups``) may open ``name`` with ``flags``.

    The child is given the folder's descriptor, so only the file's own permissions decide
    (pytest's tmp folders are 0700 to anyone but root).
    """
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.setgroups(groups)
                os.setgid(groups[0])
                os.setuid(UPLOADER_UID)
                os.close(os.open(name, flags, dir_fd=folder_fd))
                os._exit(0)
            except OSError:
                os._exit(13)
            finally:
                os._exit(14)
        _, status = os.waitpid(child, 0)
    finally:
        os.close(folder_fd)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 13), f"the uploader's probe failed in another way ({code})"
    return code == 0


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another account needs root")
    return make_station(tmp_path / "station", tiny_model_dir, files={"mode": "0640"})


def test_the_uploader_cannot_write_to_a_filed_frame(station: Station) -> None:
    uploads = [station.inbox / f"IMG_{n:04d}.JPG" for n in range(3)]
    for seed, path in enumerate(uploads):
        path.write_bytes(noise_jpeg(seed))
        os.chown(path, UPLOADER_UID, UPLOADER_UID)
        path.chmod(0o644)  # the FTP server's umask 022
    with daemon_thread(station):
        wait_until(lambda: settled(station), "the uploads to be filed")
    rows = query(station, "SELECT final_path, sha256 FROM images ORDER BY id")
    assert len(rows) == len(uploads)

    writable, readable, foreign = [], 0, []
    for final_path, recorded in rows:
        placed = Path(str(final_path))
        info = placed.lstat()
        assert sha256_of(placed) == recorded
        if info.st_uid != os.geteuid():
            foreign.append(str(placed))
        group = [info.st_gid, placed.parent.stat().st_gid]  # the file's and its folder's
        if _uploader_may_open(placed.parent, placed.name, os.O_WRONLY | os.O_APPEND, group):
            writable.append(str(placed))
        readable += _uploader_may_open(placed.parent, placed.name, os.O_RDONLY, group)
    report(
        "uploader access (point 7)",
        {
            "frames filed": len(rows),
            "still owned by the uploader": len(foreign),
            "writable by the uploader": len(writable),
            "readable by the uploader (staff group)": readable,
        },
    )
    assert readable == len(rows), "the probe itself must reach the files"
    assert writable == [], f"the uploading account may still change: {writable}"
    assert foreign == []
    assert check_invariant(station) == []
