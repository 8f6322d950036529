"""Give back the pages of a memory-mapped weights file that the image tower no longer reads."""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# madvise(2): reclaim these pages now, as memory pressure would. Clean file pages are dropped
# and read from the file again if touched; a page written to (none is) would be kept, not lost,
# which is why this, and not MADV_DONTNEED, is asked for. Linux 5.4 and later.
MADV_PAGEOUT = 21
_MAPS = Path("/proc/self/maps")


def release_mapped_pages(path: str) -> int:
    """Ask the kernel to reclaim this process's pages of every mapping of `path`; the bytes
    asked for, 0 where the file, /proc or madvise is not there or says no."""
    try:
        info = Path(path).stat()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    released = 0
    for start, end in _mappings_of(info, os.path.realpath(path)):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            released += end - start
        else:
            logger.debug("madvise on %s refused: errno %d", path, ctypes.get_errno())
    return released


def _mappings_of(info: os.stat_result, path: str) -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of the file `info` describes, at `path`."""
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
    found = []
    try:
        lines = _MAPS.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or fields[4] != str(info.st_ino):
            continue
        # The device as /proc names it, or (a btrfs subvolume names another) the file's path.
        if fields[3] == device or (len(fields) == 6 and fields[5] == str(path)):
            start, _, end = fields[0].partition("-")
            found.append((int(start, 16), int(end, 16)))
    return found
