"""Sorts a failed move's OSError: one entry's own trouble, or a destination refusing every file."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

# On the destination side only these belong to the entry (its name, its content); anything else
# there (ENOTDIR, EIO, ENOTCONN from a flaky disk) is the destination's and pauses the flow, so a
# classified frame is never rerouted to quarantine because its folder was briefly unusable.
_ENTRY_AT_DESTINATION = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL, errno.ESTALE})
# ...and these only when they name the destination file itself, not its folder (a dated folder
# that is a plain file now gives EEXIST from mkdir: that folder refuses every file).
_ENTRY_AT_DESTINATION_FILE = frozenset({errno.EEXIST, errno.ENOENT})
# Calls that name two paths (link, rename) do not say which side refused; for these the
# inbox folder is looked at to tell.
_EITHER_SIDE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class Scope(StrEnum):
    """How far a failed move reaches."""

    ENTRY = "entry"  # this inbox entry alone: retried with backoff, then set aside
    DESTINATION = "destination"  # the destination refuses every file: the flow pauses


@dataclass(frozen=True)
class MoveFault:
    scope: Scope
    at_source: bool  # the inbox side failed: no other destination would take it either
    reason: str


def classify_move_error(err: OSError, source: Path, destination: Path) -> MoveFault:
    """The one place that decides whether a move error pauses the flow or touches one entry.

    A *destination* that fails (full, over quota, read-only, refusing, not a folder, I/O
    errors) pauses; everything about the entry itself (not a regular file, its folder refuses
    the unlink, gone, a name the destination cannot hold, changed while copied) is its alone.
    """
    at_source = _failed_at_source(err, source)
    own = at_source or _entry_at_destination(err, destination)
    scope = Scope.ENTRY if own else Scope.DESTINATION
    side = "the inbox side" if at_source else f"the destination {destination.parent}"
    reason = f"{err.strerror or err} ({errno.errorcode.get(err.errno or 0, '?')} at {side})"
    return MoveFault(scope=scope, at_source=at_source, reason=reason)


def _entry_at_destination(err: OSError, destination: Path) -> bool:
    if err.errno in _ENTRY_AT_DESTINATION:
        return True
    named = {os.fsdecode(name) for name in (err.filename, err.filename2) if name is not None}
    return err.errno in _ENTRY_AT_DESTINATION_FILE and str(destination) in named


def _failed_at_source(err: OSError, source: Path) -> bool:
    if err.errno == errno.ENOENT and not os.path.lexists(source):
        return True  # vanished from the inbox
    if err.filename2 is not None and not Path(os.fsdecode(err.filename2)).is_absolute():
        return True  # a rename inside the inbox folder (the claim): an immutable or sticky entry
    if err.filename2 is not None:
        # link() and rename() name the source first whichever side failed; the source was
        # there a moment ago, so only a refusal can still be the inbox folder's.
        return err.errno in _EITHER_SIDE and not _inbox_folder_lets_go(source)
    if err.filename is None:
        return False
    named = os.fsdecode(err.filename)
    # A relative name was acted on through the inbox folder's descriptor (claimed entries are
    # reached that way; destinations always by absolute path): the inbox side.
    return not Path(named).is_absolute() or named in {str(source), str(source.parent)}


def _inbox_folder_lets_go(source: Path) -> bool:
    """Can this process remove entries from the source's folder (write and search on it)?

    access(2) also answers for root: an immutable (chattr +i) or read-only folder says no.
    """
    mode = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        return os.access(source.parent, mode, effective_ids=True)
    return os.access(source.parent, mode)
