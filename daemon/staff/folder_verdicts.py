"""Record what the verdict folders hold: which frame each file is, its verdict, where it now is."""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from daemon.file_signature import signature_of
from daemon.hashing import sha256_file
from daemon.staff.folders import Sighting
from daemon.staff.verdicts import find_image
from daemon.storage.schema import VerdictSource, printable
from daemon.storage.staff import FrameRecord, NewVerdict, StaffStore

logger = logging.getLogger(__name__)

# (device, inode, size, mtime): a file already looked at in this version is not read again.
Signature = tuple[int, int, int, int]


class FolderVerdicts:
    """Turns sightings into verdict rows and final paths; never moves or deletes a file.

    A row is added when the frame's newest folder verdict differs from the folder it is in, so
    the same frame seen again adds nothing, moving it to the other folder adds a row (history
    kept), and a later `tigerwatch verdict` on a frame still lying in a folder is not undone.
    """

    def __init__(self, store: StaffStore) -> None:
        self._store = store
        self._looked_at: dict[Path, tuple[Signature, Sighting]] = {}

    def record(self, sighting: Sighting) -> None:
        """Record one sighting; a file that is gone, or no frame, is passed over (logged once)."""
        try:
            info = os.lstat(sighting.path)
        except FileNotFoundError:
            self._looked_at.pop(sighting.path, None)  # moved on before we looked: seen there
            return
        if not stat.S_ISREG(info.st_mode):
            return
        signature = signature_of(info)
        seen = self._looked_at.get(sighting.path)
        if seen is not None and seen[0] == signature and seen[1].verdict is sighting.verdict:
            return
        self._record(sighting, info)
        self._looked_at[sighting.path] = (signature, sighting)

    def forget(self) -> None:
        """Drop what is remembered of files no longer there (called after each full scan)."""
        self._looked_at = {p: s for p, s in self._looked_at.items() if os.path.lexists(p)}

    def _record(self, sighting: Sighting, info: os.stat_result) -> None:
        shown = printable(str(sighting.path))
        image_id, from_audit = self._identify(sighting)
        if image_id is None:
            logger.warning("%s: not a frame tigerwatch has classified; left alone", shown)
            return
        frame = self._store.frame_record(image_id)
        moved_to = str(sighting.path) if _is_the_frame(frame, sighting.path) else None
        audited = from_audit or (moved_to is None and frame.audited)
        verdict = None
        if frame.folder_verdict is not sighting.verdict:
            source = VerdictSource.AUDIT if audited else VerdictSource.FOLDER
            verdict = NewVerdict(image_id, sighting.verdict, source, _owner(info))
        self._store.record_sorted(image_id, verdict, moved_to)
        if verdict is not None:
            logger.info("%s: verdict %s (%s) on image %d", shown, verdict.verdict, source, image_id)
        if moved_to is not None:
            logger.info("image %d was moved by staff to %s; recorded there", image_id, shown)

    def _identify(self, sighting: Sighting) -> tuple[int | None, bool]:
        """(image id, whether the file came from the audit folder): the image by content first
        (a frame put at a name another frame had would otherwise take that frame's verdict),
        then by the path its move came from (a frame whose EXIF a viewer rewrote)."""
        moved_from = sighting.moved_from
        image_id = find_image(self._store, sighting.path, moved_from)
        if moved_from is None:
            return image_id, False
        audited = self._store.audit_image_at(os.path.normpath(moved_from))
        if image_id is None:
            return audited, audited is not None
        return image_id, audited == image_id


def _is_the_frame(frame: FrameRecord, path: Path) -> bool:
    """Whether the file at `path` is the frame itself (moved here), not a copy or audit link.

    It is, unless the frame's recorded file is still there with the frame's content: an audit
    hard link or a staff copy leaves the original in place, and a name freed by a staff move
    may since hold another frame the daemon filed.
    """
    if frame.final_path is None:
        return False  # not filed yet: whatever this is, the daemon's own move comes later
    if frame.final_path == str(path):
        return False  # already recorded here
    try:
        return sha256_file(Path(frame.final_path)) != frame.sha256
    except OSError:
        return True  # nothing (or no regular file) there any more: this is where it went


def _owner(info: os.stat_result) -> str | None:
    """Who judged: the file's owner, unless that is the daemon itself (then: not known).

    A move keeps a file's owner, so a frame the daemon filed is still the daemon's own.
    """
    if info.st_uid == os.geteuid():
        return None
    try:
        return pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        return str(info.st_uid)
