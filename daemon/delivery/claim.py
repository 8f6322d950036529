"""Claim an inbox file before moving it: a private name in its own folder, checked by inode."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from daemon.beneath import walk_beneath
from daemon.delivery.fileops import NO_HARD_LINK_ERRNOS, Entry
from daemon.delivery.naming import split_extension

logger = logging.getLogger(__name__)

# Hidden, so the watcher and the scanner never take a claimed file for a new arrival.
CLAIM_PREFIX = ".tigerwatch-claim-"
_NAME_MAX_BYTES = 255
_MAX_RETURN_ATTEMPTS = 1000


def claim_name(tag: str, name: str) -> str:
    """The private name of inbox file ``name`` while row ``tag`` ("i12") moves it.

    Derived from the row, so a restart finds the claim a crash left behind.
    """
    prefix = f"{CLAIM_PREFIX}{tag}-"
    room = _NAME_MAX_BYTES - len(prefix.encode())
    return prefix + os.fsdecode(os.fsencode(name)[:room])


def claim_tag(claimed: str) -> str | None:
    """The row tag ("i12") of a claim name, or None for other names."""
    if not claimed.startswith(CLAIM_PREFIX):
        return None
    tag, dash, _name = claimed[len(CLAIM_PREFIX) :].partition("-")
    return tag if dash and tag else None


def original_name(claimed: str) -> str | None:
    """The name a claim was taken from (cut to fit NAME_MAX), or None for other names."""
    if not claimed.startswith(CLAIM_PREFIX):
        return None
    _tag, dash, name = claimed[len(CLAIM_PREFIX) :].partition("-")
    return name if dash and name else None


class ClaimReplacedError(OSError):
    """Another file was published onto the name between the look and the claim."""


def claim(folder: int, name: str, tag: str, *, shown: str) -> Entry | None:
    """Rename inbox entry ``name`` to its claim name and return it; None when neither exists.

    A claim left by a crash is returned as it is: a file since published at ``name`` is a new
    arrival and stays. The entry renamed must be the inode looked at just before (device and
    inode), or it goes back and ClaimReplacedError asks for another try.
    """
    private = Entry(claim_name(tag, name), folder, shown)
    if _exists(private):
        return private
    try:
        before = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    os.rename(name, private.name, src_dir_fd=folder, dst_dir_fd=folder)
    if not os.path.samestat(before, private.lstat()):
        give_back(private, name)
        raise ClaimReplacedError(errno.EBUSY, "replaced while being claimed", shown)
    return private


def unclaim(private: Entry, name: str) -> None:
    """Undo a claim whose move did not happen, when ``name`` is still free (else keep it)."""
    with contextlib.suppress(OSError):  # FileExistsError included: the next round goes on
        _place_no_clobber(private, name)


def give_back(private: Entry, name: str) -> str:
    """Return a claimed file to the inbox as a new arrival: at ``name``, or "stem-N.ext" when
    a newer upload sits there. Never overwrites; returns the name it got."""
    folder = private.dir_fd
    stem, extension = split_extension(name)
    for number in range(_MAX_RETURN_ATTEMPTS):
        candidate = name if number == 0 else f"{stem}-{number}{extension}"
        try:
            _place_no_clobber(private, candidate)
        except FileExistsError:
            continue
        if folder is not None:
            os.fsync(folder)
        logger.info("%s: returned to the inbox as %r, a new arrival", private.shown, candidate)
        return candidate
    raise FileExistsError(errno.EEXIST, "no free name to return the file to", private.shown)


def _place_no_clobber(private: Entry, candidate: str) -> None:
    folder = private.dir_fd
    try:
        os.link(
            private.name, candidate, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False
        )
    except OSError as err:
        if err.errno not in NO_HARD_LINK_ERRNOS:
            raise
        if _exists(Entry(candidate, folder)):
            raise FileExistsError(errno.EEXIST, "name taken", candidate) from err
        os.rename(private.name, candidate, src_dir_fd=folder, dst_dir_fd=folder)
        return
    os.unlink(private.name, dir_fd=folder)


def leftover_claims(inboxes: Sequence[Path]) -> Iterator[tuple[int, str, Path]]:
    """(folder fd, claim name, folder path) of every claim under the inboxes; links never
    followed. The descriptor is valid only until the next item."""
    for root in inboxes:
        for folder_fd, folder, names in walk_beneath(root):
            for name in names:
                if name.startswith(CLAIM_PREFIX):
                    yield folder_fd, name, folder


def _exists(entry: Entry) -> bool:
    try:
        entry.lstat()
    except FileNotFoundError:
        return False
    return True
