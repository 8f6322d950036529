"""Record staff verdicts from the command line and from CSV files (a path or SHA-256 per row)."""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.hashing import sha256_file
from daemon.storage.schema import VerdictSource, VerdictValue, printable
from daemon.storage.staff import NewVerdict, StaffStore

logger = logging.getLogger(__name__)

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# What a CSV's verdict column may say (a Timelapse export says "true"/"false" for a checkbox).
VERDICT_WORDS = {
    "tiger": VerdictValue.TIGER,
    "not-tiger": VerdictValue.NOT_TIGER,
    "not tiger": VerdictValue.NOT_TIGER,
    "true": VerdictValue.TIGER,
    "false": VerdictValue.NOT_TIGER,
}


@dataclass(frozen=True)
class VerdictOutcome:
    recorded: int
    problems: list[str]  # one line each: the file (or CSV line) and what is wrong


def find_image(store: StaffStore, path: Path, moved_from: Path | None = None) -> int | None:
    """The image a file is: by its content first (SHA-256 names one image exactly, wherever the
    file lies, and another frame may lie at a name the database records); for content no frame
    has (a viewer re-saved its EXIF), by the path it was moved from, else where it lies."""
    image_id = store.image_with_sha256(sha256_file(path))
    for place in (moved_from, path):
        if image_id is None and place is not None:
            image_id = store.image_at(os.path.normpath(place.absolute()))  # as config paths are
    return image_id


def verdicts_for_paths(
    store: StaffStore, paths: Sequence[Path], verdict: VerdictValue, who: str | None
) -> VerdictOutcome:
    """Record `verdict` for each file; a path that is no known frame is a problem, not a stop."""
    found: list[NewVerdict] = []
    problems: list[str] = []
    for path in paths:
        try:
            image_id = find_image(store, path)
        except OSError as err:
            problems.append(f"{printable(str(path))}: cannot read: {err.strerror or err}")
            continue
        if image_id is None:
            problems.append(f"{printable(str(path))}: not a frame tigerwatch has classified")
            continue
        # A judged audit link says so: the audit's estimate rests on these verdicts.
        audited = store.audit_link(image_id) == os.path.normpath(path.absolute())
        source = VerdictSource.AUDIT if audited else VerdictSource.CLI
        found.append(NewVerdict(image_id, verdict, source, who))
    store.record_verdicts(found)
    return VerdictOutcome(len(found), problems)


def import_csv(store: StaffStore, csv_path: Path, who: str | None) -> VerdictOutcome:
    """Record one verdict per row of a CSV with columns `path` or `sha256`, and `verdict`."""
    with csv_path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        columns = {name.strip().lower() for name in reader.fieldnames or ()}
        if "verdict" not in columns or not columns & {"path", "sha256"}:
            message = "needs a 'verdict' column and a 'path' or 'sha256' column"
            return VerdictOutcome(0, [f"{csv_path}: {message}"])
        found, problems = _rows(store, csv_path, reader)
    store.record_verdicts(found)
    return VerdictOutcome(len(found), problems)


def _rows(
    store: StaffStore, csv_path: Path, reader: Iterable[dict[str, str | None]]
) -> tuple[list[NewVerdict], list[str]]:
    found: list[NewVerdict] = []
    problems: list[str] = []
    for line, raw in enumerate(reader, start=2):  # line 1 is the header
        row = {(key or "").strip().lower(): (value or "").strip() for key, value in raw.items()}
        where = f"{csv_path}:{line}"
        verdict = VERDICT_WORDS.get(row.get("verdict", "").lower())
        if verdict is None:
            problems.append(f"{where}: verdict {row.get('verdict')!r} is not tiger or not-tiger")
            continue
        image_id, problem = _row_image(store, row, csv_path.parent)
        if image_id is None:
            problems.append(f"{where}: {problem}")
            continue
        found.append(NewVerdict(image_id, verdict, VerdictSource.IMPORT, None))
    return found, problems


def _row_image(store: StaffStore, row: dict[str, str], base: Path) -> tuple[int | None, str]:
    sha256 = row.get("sha256", "")
    if sha256:
        if not SHA256.match(sha256):
            return None, f"sha256 {sha256!r} is not 64 hex digits"
        image_id = store.image_with_sha256(sha256)
        return image_id, f"no frame has sha256 {sha256}"
    if not row.get("path"):
        return None, "neither path nor sha256 given"
    path = Path(row["path"])
    path = path if path.is_absolute() else base / path  # relative to the CSV, like Timelapse
    try:
        return find_image(store, path), f"{printable(str(path))}: not a frame tigerwatch knows"
    except OSError as err:
        return None, f"{printable(str(path))}: cannot read: {err.strerror or err}"
