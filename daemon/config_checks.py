"""Folder-layout checks for the paths section: no folder may be read or written twice.

Every comparison uses the real path (os.path.realpath), so two spellings of one folder, or a
symlinked parent, cannot slip an overlap past the check.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# A key path inside the paths section, e.g. ("inbox", 0, "path").
Loc = tuple[str | int, ...]

_REINGEST = "the daemon would re-ingest its own output"
_TWICE = "every frame in it would be picked up twice and recorded as its own duplicate"
_SHARED = "each outcome needs its own folder or sorted frames become indistinguishable"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def layout_problems(
    inboxes: Sequence[Path], destinations: Mapping[str, Path]
) -> list[tuple[Loc, str]]:
    """Every overlap between inboxes and destinations, each at the key that causes it."""
    found = duplicate_inboxes(inboxes)
    repeated = {loc[1] for loc, _ in found}
    found.extend(nested_inboxes(inboxes, skip=repeated))
    for index, inbox in enumerate(inboxes):
        if index not in repeated:
            found.extend(nesting_problems(index, inbox, destinations))
    found.extend(shared_destinations(destinations))
    return found


def duplicate_inboxes(inboxes: Sequence[Path]) -> list[tuple[Loc, str]]:
    first_seen: dict[Path, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, inbox in enumerate(inboxes):
        real = _real(inbox)
        if real in first_seen:
            found.append((("inbox", index, "path"), f"repeats paths.inbox[{first_seen[real]}]"))
        first_seen.setdefault(real, index)
    return found


def nested_inboxes(inboxes: Sequence[Path], skip: set[str | int]) -> list[tuple[Loc, str]]:
    """An inbox inside another one: the outer watch already sees (and claims) its frames."""
    found: list[tuple[Loc, str]] = []
    for index, inbox in enumerate(inboxes):
        if index in skip:
            continue
        real = _real(inbox)
        for other, outer in enumerate(inboxes):
            outer_real = _real(outer)
            if other != index and real != outer_real and real.is_relative_to(outer_real):
                message = f"{inbox} lies inside inbox {outer} (paths.inbox[{other}]); {_TWICE}"
                found.append((("inbox", index, "path"), message))
                break
    return found


def nesting_problems(
    index: int, inbox: Path, destinations: Mapping[str, Path]
) -> list[tuple[Loc, str]]:
    """Output folders inside this inbox, or this inbox inside an output folder."""
    inbox_real = _real(inbox)
    found: list[tuple[Loc, str]] = []
    flagged: list[Path] = []
    inbox_flagged = False
    for name, folder in destinations.items():
        real = _real(folder)
        if real.is_relative_to(inbox_real):
            # uncertain/duplicates usually sit inside review/archive: report only the outer one.
            if not any(real.is_relative_to(outer) for outer in flagged):
                where = "is" if real == inbox_real else "lies inside"
                found.append(
                    ((name,), f"{where} inbox {inbox} (paths.inbox[{index}]); {_REINGEST}")
                )
            flagged.append(real)
        elif inbox_real.is_relative_to(real) and not inbox_flagged:
            found.append(
                (("inbox", index, "path"), f"lies inside the {name} folder {folder}; {_REINGEST}")
            )
            inbox_flagged = True
    return found


def shared_destinations(destinations: Mapping[str, Path]) -> list[tuple[Loc, str]]:
    """Two outcome keys naming one folder; nesting one inside another is fine (the defaults do)."""
    first_seen: dict[Path, tuple[str, Path]] = {}
    found: list[tuple[Loc, str]] = []
    for name, folder in destinations.items():
        real = _real(folder)
        if real in first_seen:
            other, other_folder = first_seen[real]
            message = (
                f"{folder} is the same folder as paths.{other} {other_folder} "
                f"(both {real}); {_SHARED}"
            )
            found.append(((name,), message))
        first_seen.setdefault(real, (name, folder))
    return found


def backup_folder_problems(
    folder: Path | None, inboxes: Sequence[Path], destinations: Mapping[str, Path]
) -> list[tuple[Loc, str]]:
    """The backup folder inside (or equal to) an inbox or an output folder, at its own key."""
    if folder is None:
        return []
    real = _real(folder)
    loc: Loc = ("database", "backup", "folder")
    for index, inbox in enumerate(inboxes):
        if real.is_relative_to(_real(inbox)):
            where = "is" if real == _real(inbox) else "lies inside"
            reason = "the daemon would take its own backups for uploads"
            return [(loc, f"{folder} {where} inbox {inbox} (paths.inbox[{index}]); {reason}")]
    for name, destination in destinations.items():  # parents first: the outer folder is named
        if real.is_relative_to(_real(destination)):
            where = "is" if real == _real(destination) else "lies inside"
            reason = "the database's backups would be mixed with the sorted frames"
            return [
                (loc, f"{folder} {where} the {name} folder {destination} (paths.{name}); {reason}")
            ]
    return []
