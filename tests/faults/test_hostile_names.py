"""Fault 10: hostile inbox entries. Symlinks (to files and folders outside the inbox) are never
followed; names with "..", slash look-alikes, leading dashes, newlines or invalid UTF-8 cannot
escape or break the destination tree; files the daemon creates get the configured group and mode.
"""

from __future__ import annotations

import ctypes
import grp
import io
import os
import random
import re
import stat
import struct
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from daemon.classify.classifier import ClipClassifier
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
    sha256_of,
)
from tests.faults.fault_kit import count, noise_jpeg, report, sha256_hex, wait_until

pytestmark = pytest.mark.fault

DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NAME_MAX_BYTES = 255


# --- the kernel's word on what was opened ---------------------------------------------------------

_IN_ACCESS, _IN_OPEN, _IN_ISDIR = 0x1, 0x20, 0x40000000
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("iIII")


class OpenSpy:
    """inotify IN_OPEN / IN_ACCESS on folders outside the inbox: any open or read of them or of
    a file in them, by anyone, is reported by the kernel. Proves "never read", not just "not
    moved"."""

    def __init__(self, folders: list[Path]) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        assert self._fd >= 0, os.strerror(ctypes.get_errno())
        self._names: dict[int, Path] = {}
        for folder in folders:
            wd = libc.inotify_add_watch(self._fd, os.fsencode(folder), _IN_OPEN | _IN_ACCESS)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self._names[wd] = folder

    def events(self) -> list[str]:
        """Everything opened or read since the spy started, as "open path" / "read path"."""
        found: list[str] = []
        while True:
            try:
                buffer = os.read(self._fd, 65536)
            except BlockingIOError:
                return found
            found += self._parse(buffer)

    def _parse(self, buffer: bytes) -> list[str]:
        found, offset = [], 0
        while offset < len(buffer):
            wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(buffer, offset)
            offset += _EVENT_HEADER.size
            name = buffer[offset : offset + length].rstrip(b"\0").decode(errors="replace")
            offset += length
            what = "open" if mask & _IN_OPEN else "read"
            found.append(f"{what} {self._names[wd] / name}")
        return found

    def close(self) -> None:
        os.close(self._fd)


# --- helpers --------------------------------------------------------------------------------------


def write_bytes_name(folder: Path, name: bytes | str, data: bytes) -> bytes:
    """Create folder/name with raw bytes (names need not be valid UTF-8); returns the path."""
    path = os.path.join(os.fsencode(folder), os.fsencode(name))  # noqa: PTH118 (bytes path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def inbox_entries(station: Station) -> list[bytes]:
    """Everything still in the inbox, as raw names (no decoding can hide one)."""
    found: list[bytes] = []
    for root, folders, files in os.walk(os.fsencode(station.inbox)):
        found += [os.path.join(root, name) for name in files + folders]  # noqa: PTH118
    return sorted(found)


def destination_entries(station: Station) -> list[Path]:
    return sorted(
        path for root in station.destinations() if root.exists() for path in root.rglob("*")
    )


def unsafe_name_reasons(name: str) -> list[str]:
    """Why a name made by the daemon would be unsafe on a station's disks (empty: it is safe)."""
    reasons = []
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return ["not valid UTF-8"]
    if len(encoded) > NAME_MAX_BYTES:
        reasons.append(f"{len(encoded)} bytes")
    if name[:1] in {".", "-"}:
        reasons.append("leading dot or dash")
    if any(char in '/\\:*?"<>|' for char in name):
        reasons.append("separator or non-portable character")
    if any(unicodedata.category(char) in {"Cc", "Cs", "Zl", "Zp"} for char in name):
        reasons.append("control character or line break")
    if any(char in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069" for char in name):
        reasons.append("bidirectional override")
    return reasons


@dataclass(frozen=True)
class ImageOutcome:
    sha256: str
    state: str
    decision: str
    final_path: Path | None


def outcome_of(station: Station, sha256: str) -> ImageOutcome | None:
    rows = query(
        station, "SELECT sha256, state, decision, final_path FROM images WHERE sha256 = ?", sha256
    )
    if not rows:
        return None
    ((digest, state, decision, final),) = rows
    return ImageOutcome(str(digest), str(state), str(decision), Path(str(final)) if final else None)


def decision_roots(station: Station) -> dict[str, Path]:
    paths = station.config().paths
    return {
        "positive": paths.review,
        "uncertain": paths.uncertain,
        "negative": paths.archive,
        "quarantined": paths.quarantine,
    }


# --- (a) symlinks ---------------------------------------------------------------------------------


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


@dataclass
class Outside:
    """Files beside the station that inbox symlinks point at."""

    folder: Path
    target: Path
    album: Path
    album_files: list[Path]

    def contents(self) -> dict[Path, tuple[str, int, int]]:
        """Path -> (sha256, mode, mtime_ns) of everything outside: nothing may change."""
        result = {}
        for path in [self.target, *self.album_files]:
            info = path.stat()
            result[path] = (sha256_of(path), info.st_mode, info.st_mtime_ns)
        return result


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Outside]:
    folder = tmp_path / "outside"
    album = folder / "album"
    album.mkdir(parents=True)
    target = folder / "target.jpg"
    target.write_bytes(noise_jpeg(1))
    album_files = [album / f"IMG_{n}.JPG" for n in range(3)]
    for number, path in enumerate(album_files):
        path.write_bytes(noise_jpeg(10 + number))
    yield Outside(folder, target, album, album_files)


def test_symlinks_are_quarantined_as_links_and_never_followed(
    station: Station, outside: Outside
) -> None:
    inbox = station.inbox
    before = outside.contents()
    targets = {
        "link.jpg": str(outside.target),
        "relative-link.jpg": os.path.relpath(outside.target, inbox),
        "dangling.jpg": str(outside.folder / "no-such-file.jpg"),
        "album.jpg": str(outside.album),
        "photos": str(outside.album),
    }
    # One link exists before the start (found by the start-up scan), the rest arrive later.
    (inbox / "early-link.jpg").symlink_to(outside.target)
    targets["early-link.jpg"] = str(outside.target)
    spy = OpenSpy([outside.folder, outside.album])
    try:
        with daemon_thread(station):
            for name, target in targets.items():
                if not (inbox / name).is_symlink():
                    (inbox / name).symlink_to(target)
            good = inbox / "good.jpg"
            good.write_bytes(noise_jpeg(2))
            wait_until(lambda: count(station, "rejects") == 5, "five reject rows")
            # A file arriving in the linked folder: visible through inbox/photos/ only if the
            # daemon followed the link.
            late = outside.album / "IMG_late.JPG"
            late.write_bytes(noise_jpeg(20))
            canary = inbox / "canary.jpg"
            canary.write_bytes(noise_jpeg(3))
            wait_until(lambda: settled(station) and count(station, "images") == 2, "idle")
        opened = spy.events()
    finally:
        spy.close()
    # Our own write of IMG_late.JPG opened it (which shows the spy works); nothing else may
    # have opened or read anything out there.
    ours = [event for event in opened if event.endswith("/album/IMG_late.JPG")]
    foreign = [event for event in opened if event not in ours]
    assert ours, f"the spy did not even see our own write: {opened}"
    rejects = query(station, "SELECT source_path, reason, state, final_path FROM rejects")
    shas = {str(row[0]) for row in query(station, "SELECT sha256 FROM images")}
    outside_shas = {sha for sha, _, _ in before.values()} | {sha256_of(late)}
    figures = {
        "links in the inbox": len(targets),
        "reject rows (quarantined as links)": len(rejects),
        "kernel-reported opens/reads outside the inbox": foreign,
        "outside contents recorded as images": len(shas & outside_shas),
        "folder link without an image name": "left in the inbox, not recorded",
    }
    report("hostile names (a): symlinks to files and folders outside", figures)

    assert foreign == [], "something outside the inbox was opened or read through a link"
    assert outside.contents() == before
    assert shas == {sha256_hex(noise_jpeg(2)), sha256_hex(noise_jpeg(3))}
    assert not shas & outside_shas
    quarantine = station.config().paths.quarantine
    for source, reason, state, final in rejects:
        assert state == "done" and "symbolic link" in str(reason), (source, reason)
        moved = Path(str(final))
        assert moved.is_symlink() and quarantine in moved.parents, moved
        # os.readlink: Path.readlink would normalise the target text.
        assert os.readlink(moved) == targets[Path(str(source)).name]  # noqa: PTH115
        assert "symbolic link" in moved.with_name(moved.name + ".txt").read_text()
    assert {Path(str(row[0])).name for row in rejects} == {
        "early-link.jpg",
        "link.jpg",
        "relative-link.jpg",
        "dangling.jpg",
        "album.jpg",
    }
    assert (inbox / "photos").is_symlink()  # not an image name: never touched
    assert check_invariant(station) == []


# --- (b) hostile names ----------------------------------------------------------------------------

# Valid frames under names that try to escape, hide, inject or break encodings.
GOOD_NAMES: tuple[str | bytes, ...] = (
    "a..b.jpg",
    "x..%2F..%2Fescape.jpg",
    "up\u2215..\u2215..\u2215lookalike\u2044slash\uff0ffull.jpg",  # division/fraction/fullwidth
    "back\\..\\slash.jpg",
    "-rf.jpg",
    "--help.jpg",
    "-.jpg",
    "a\nb.jpg",
    "tab\there\r.jpg",
    "\u202egpj.exe.jpg",
    "x" * 251 + ".jpg",  # 255 bytes, NAME_MAX
    b"caf\xe9.jpg",  # Latin-1, invalid UTF-8 (a Windows FTP client, an old camera)
    b"\xcf\xe0\xf0\xea 5.jpg",  # "Парк 5" in cp1251
    "\u00fcn\u00efc\u00f6d\u00e9 ok.jpg",
)
# Undecodable content under hostile names: quarantined, with a note beside each.
BAD_NAMES: tuple[str | bytes, ...] = ("--bad\nname.jpg", b"bad-\xe9.jpg")
# Hostile folders inside the inbox, each holding one valid frame.
FOLDERS: tuple[str | bytes, ...] = ("-rf\n..", b"dir-\xe9")
# Hidden names are never taken (uploaders' temp files): they must stay as they are.
HIDDEN_NAMES: tuple[str, ...] = ("..jpg", "..%2F..%2Fx.jpg", ".-rf.jpg")


def display(name: str | bytes) -> str:
    return repr(os.fsdecode(name))


def test_hostile_names_land_under_their_root_with_safe_names(station: Station) -> None:
    inbox = station.inbox
    rng = random.Random(7)
    expected: dict[str, str | bytes] = {}  # sha256 -> name as dropped
    hidden: dict[bytes, bytes] = {}
    with daemon_thread(station):
        for seed, name in enumerate(GOOD_NAMES, 100):
            data = noise_jpeg(seed)
            write_bytes_name(inbox, name, data)
            expected[sha256_hex(data)] = name
        for name in BAD_NAMES:
            data = rng.randbytes(3000)
            write_bytes_name(inbox, name, data)
            expected[sha256_hex(data)] = name
        for seed, folder in enumerate(FOLDERS, 200):
            os.mkdir(os.path.join(os.fsencode(inbox), os.fsencode(folder)))  # noqa: PTH102, PTH118
            data = noise_jpeg(seed)
            write_bytes_name(inbox / os.fsdecode(folder), "IMG_0001.JPG", data)
            expected[sha256_hex(data)] = os.fsencode(folder) + b"/IMG_0001.JPG"
        for seed, name in enumerate(HIDDEN_NAMES, 300):
            data = noise_jpeg(seed)
            hidden[write_bytes_name(inbox, name, data)] = data

        def finished() -> bool:
            return settled(station) and count(station, "images") >= len(expected)

        wait_until(finished, f"{len(expected)} images done and an idle daemon")
    roots = decision_roots(station)
    outcomes: dict[str, str] = {}
    problems: list[str] = []
    for sha, name in expected.items():
        outcome = outcome_of(station, sha)
        if outcome is None or outcome.final_path is None:
            problems.append(f"{display(name)}: no finished image row")
            continue
        final = outcome.final_path
        outcomes[display(name)[:40]] = f"{outcome.decision}: {final.parent.name}/{final.name!r}"
        # A file in an inbox folder has that folder as its deployment, filed below the date
        # (and, in review, its event): <root>/<date>/<deployment>[/event-N]/<name>.
        root = roots[outcome.decision]
        folders = final.parent.relative_to(root).parts if root in final.parents else ()
        if not folders or not DATED.match(folders[0]):
            problems.append(f"{display(name)}: {final} is not <root>/<date>/.../<name>")
        problems += [f"{final}: folder {f!r}: {r}" for f in folders for r in unsafe_name_reasons(f)]
        problems += [
            f"{display(name)} -> {final.name!r}: {r}" for r in unsafe_name_reasons(final.name)
        ]
    for path in destination_entries(station):
        problems += [f"{path}: {r}" for r in unsafe_name_reasons(path.name)]
    left = [entry for entry in inbox_entries(station) if entry not in hidden]
    left_folders = [entry for entry in left if os.path.isdir(entry)]  # noqa: PTH112
    report(
        "hostile names (b): names that try to escape or break the tree",
        {
            "names dropped (files, folders, hidden)": (
                len(GOOD_NAMES) + len(BAD_NAMES),
                len(FOLDERS),
                len(HIDDEN_NAMES),
            ),
            **outcomes,
            "problems": problems,
        },
    )
    assert problems == []
    assert sorted(left) == sorted(left_folders), f"files left in the inbox: {left}"
    for raw_path, data in hidden.items():  # hidden names are never touched
        with open(raw_path, "rb") as stream:  # noqa: PTH123 (bytes path)
            assert stream.read() == data
    assert not any(outcome_of(station, sha256_hex(data)) for data in hidden.values()), (
        "a hidden name was recorded"
    )
    quarantine = station.config().paths.quarantine
    notes = {path.name: path.read_bytes().decode("utf-8") for path in quarantine.rglob("*.txt")}
    assert len(notes) == len(BAD_NAMES)
    assert any("bad-\\xe9.jpg" in note for note in notes.values()), notes  # bytes as escapes
    # The database keeps the exact bytes of an undecodable name, so the file stays findable.
    for sha, name in expected.items():
        if isinstance(name, bytes) and b"/" not in name:
            (stored,) = query(station, "SELECT original_path FROM images WHERE sha256 = ?", sha)
            assert stored == (os.fsencode(inbox) + b"/" + name,), stored
    stray = [
        path.name
        for path in station.root.iterdir()
        if path.name not in {"inbox", "review", "archive", "quarantine", "tigerwatch.yaml"}
        and not path.name.startswith("tigerwatch.db")
    ]
    assert stray == [], "something was created outside the destination folders"
    assert check_invariant(station, set(expected)) == []


# --- (c) group and mode of what the daemon creates ------------------------------------------------


def another_group() -> grp.struct_group:
    """A group that exists, is not the one new files get, and can be given to files here."""
    current = os.getegid()
    if os.geteuid() == 0:
        candidates = [group for group in grp.getgrall() if group.gr_gid != current]
    else:
        candidates = [grp.getgrgid(gid) for gid in os.getgroups() if gid != current]
    if not candidates:
        pytest.skip("no second group to give the daemon's files")
    return candidates[0]


def thresholds_that_split(
    model_dir: Path, frames: list[bytes], labels: list[str], targets: list[bool]
) -> tuple[float, float]:
    """(positive, uncertain) thresholds putting these frames in all three decisions: the tiny
    random CLIP's scores are arbitrary, so they are measured first."""
    classifier = ClipClassifier.load(str(model_dir), labels, targets)
    images = [Image.open(io.BytesIO(frame)).convert("RGB") for frame in frames]
    scores = sorted(result.target_score for result in classifier.classify(images))
    return (scores[-2] + scores[-3]) / 2, (scores[1] + scores[2]) / 2


def test_created_files_and_folders_get_the_configured_group_and_mode(
    tmp_path: Path,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    group = another_group()
    frames = [noise_jpeg(400 + n) for n in range(6)]
    positive, uncertain = thresholds_that_split(
        tiny_model_dir, frames, default_labels, default_targets
    )
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        files={"group": group.gr_name, "mode": "0640"},
        decision={"positive_threshold": positive, "uncertain_threshold": uncertain},
        # The daemon must score as thresholds_that_split did: its labels, view and precision.
        labels=[
            {"text": t, "target": g} for t, g in zip(default_labels, default_targets, strict=True)
        ],
        model={"name_or_path": str(tiny_model_dir), "view": "center", "precision": "fp32"},
    )
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(noise_jpeg(499))
    outside_before = outside.stat()
    inbox = station.inbox
    with daemon_thread(station):
        for number, frame in enumerate(frames):
            (inbox / f"IMG_{number:04d}.JPG").write_bytes(frame)
        (inbox / "copy of IMG_0000.JPG").write_bytes(frames[0])  # -> archive/duplicates
        (inbox / "broken.jpg").write_bytes(random.Random(8).randbytes(4000))  # -> quarantine
        (inbox / "link.jpg").symlink_to(outside)  # -> quarantine, as a link
        wait_until(lambda: settled(station) and count(station, "images") == len(frames) + 1, "idle")
    entries = destination_entries(station)
    problems: list[str] = []
    kinds: dict[str, int] = {"files": 0, "links": 0, "notes": 0, "dated folders": 0}
    for path in entries:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            kinds["links"] += 1
            wanted_mode = None  # a link's own mode means nothing on Linux
        elif stat.S_ISDIR(info.st_mode):
            if not DATED.match(path.name):
                continue  # review/uncertain, archive/duplicates: the station's own folders
            kinds["dated folders"] += 1
            wanted_mode = 0o750
        else:
            kinds["notes" if path.name.endswith(".txt") else "files"] += 1
            wanted_mode = 0o640
        if info.st_gid != group.gr_gid:
            problems.append(f"{path}: group {info.st_gid}, wanted {group.gr_gid}")
        if wanted_mode is not None and stat.S_IMODE(info.st_mode) != wanted_mode:
            problems.append(
                f"{path}: mode {stat.S_IMODE(info.st_mode):04o}, wanted {wanted_mode:04o}"
            )
    decisions = {
        str(decision): number
        for decision, number in query(
            station, "SELECT decision, count(*) FROM images GROUP BY decision"
        )
    }
    report(
        "hostile names (c): group and mode of the daemon's files",
        {
            "group given": f"{group.gr_name} ({group.gr_gid}); the process's is {os.getegid()}",
            "thresholds (positive, uncertain)": (round(positive, 4), round(uncertain, 4)),
            "decisions": decisions,
            "entries checked": kinds,
            "problems": problems,
        },
    )
    assert problems == []
    assert set(decisions) == {"positive", "uncertain", "negative", "quarantined"}
    assert kinds["links"] == 1 and kinds["notes"] == 2 and kinds["files"] == len(frames) + 2
    assert count(station, "duplicates") == 1
    after = outside.stat()  # the link's target was not chowned or chmodded through it
    assert (after.st_gid, after.st_mode) == (outside_before.st_gid, outside_before.st_mode)
    assert check_invariant(station) == []
