"""Issue 10, points 1, 2, 3 and 12: what happens to an inbox name between classification and move.

1. a re-upload published onto a name while its earlier file is being moved is a new arrival, kept;
2. bytes replaced, appended to or swapped for a symlink after classification are never filed
   under that decision: what lands in a destination hashes to its recorded SHA-256;
3. a sub-folder swapped for a symlink to a folder outside never leads the daemon outside;
12. each quarantined file has its own note, also where an earlier file's note was left behind.

The daemon runs in a thread of this process with the tiny model and real folders; each hostile
act is done at the moment it hurts most (a hook on os.link or on the router's per-file step),
because on a real station that moment is a matter of luck.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.delivery.router import Router
from daemon.storage.store import PendingMove
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    images_done,
    make_station,
    migrated,
    query,
    settled,
    sha256_of,
    wait_for,
)
from tests.faults.fault_kit import (
    SETTLE_TIMEOUT,
    noise_jpeg,
    report,
    sha256_hex,
    wait_until,
    write_file,
)
from tests.faults.test_hostile_names import OpenSpy

pytestmark = pytest.mark.fault

REAL_LINK = os.link


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    # The rescan is the slow safety net: these tests must pass on events and hints alone.
    return make_station(
        tmp_path / "station",
        tiny_model_dir,
        watch={"quiet_seconds": 0.3, "rescan_interval_seconds": 600, "health_check_seconds": 0.5},
    )


def publish(path: Path, data: bytes) -> None:
    """Publish an upload the way pure-ftpd does: a hidden temp file renamed onto the name."""
    temporary = path.with_name(f".pureftpd-upload.{os.getpid()}.{path.name}")
    temporary.write_bytes(data)
    temporary.rename(path)


def destination_roots(station: Station) -> list[Path]:
    paths = station.config().paths
    return [paths.review, paths.uncertain, paths.archive, paths.duplicates, paths.quarantine]


def destination_files(station: Station) -> Iterator[Path]:
    for root in destination_roots(station):
        if root.exists():
            yield from (p for p in root.rglob("*") if p.is_symlink() or p.is_file())


def contents_in_destinations(station: Station) -> set[str]:
    return {sha256_of(p) for p in destination_files(station) if p.is_file() and not p.is_symlink()}


def misfiled(station: Station) -> list[str]:
    """Image rows whose file holds other bytes than recorded, or is a link (followed or not)."""
    found = []
    for sha256, final_path in query(
        station, "SELECT sha256, final_path FROM images WHERE final_path IS NOT NULL"
    ):
        path = Path(str(final_path))
        if path.is_symlink() or not path.is_file() or sha256_of(path) != sha256:
            found.append(str(path))
    return found


def idle(station: Station, contents: int) -> bool:
    return settled(station) and images_done(station) >= contents


# --- 1: a re-upload under the same name during the move --------------------------------------


def test_a_reupload_published_during_the_move_is_kept(
    station: Station, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"IMG_{number:04d}.JPG" for number in range(1, 21)]
    first = {name: noise_jpeg(100 + index) for index, name in enumerate(names)}
    again = {name: noise_jpeg(200 + index) for index, name in enumerate(names)}  # counter reset
    pending = set(names)

    def link_then_reupload(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        REAL_LINK(src, dst, *args, **kwargs)
        target = Path(os.fsdecode(dst))
        if target.is_absolute() and station.inbox not in target.parents and target.name in pending:
            name = target.name  # the first file is linked into its destination: the worst moment
            pending.discard(name)
            publish(station.inbox / name, again[name])

    monkeypatch.setattr(os, "link", link_then_reupload)
    with daemon_thread(station):
        for name in names:
            publish(station.inbox / name, first[name])
        finished = wait_for(lambda: idle(station, 2 * len(names)), SETTLE_TIMEOUT)
    kept = contents_in_destinations(station)
    lost = [name for name in names if sha256_hex(again[name]) not in kept]
    report(
        "move races 1: re-upload under the same name during the move",
        {
            "re-uploads published mid-move": len(names) - len(pending),
            "re-uploads lost": f"{len(lost)} of {len(names)}",
            "first uploads lost": sum(sha256_hex(d) not in kept for d in first.values()),
        },
    )
    assert pending == set(), "the hook never ran: no move was linked"
    assert lost == [], f"re-uploads deleted by the move of the earlier file: {lost[:5]}"
    assert finished, "the daemon did not settle"
    assert all(sha256_hex(data) in kept for data in first.values())
    assert check_invariant(station) == []


# --- 2: other bytes than those classified -------------------------------------------------------


def test_bytes_changed_after_classification_are_never_filed_under_its_decision(
    station: Station, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write_file(outside / "passwd.jpg", noise_jpeg(300))
    inbox = station.inbox
    originals = {name: noise_jpeg(310 + i) for i, name in enumerate(["r.jpg", "a.jpg", "s.jpg"])}
    replacement = noise_jpeg(320)
    tail = b"\0 appended by a slow upload"
    appended = originals["a.jpg"] + tail
    acts = {
        str(inbox / "r.jpg"): lambda: publish(inbox / "r.jpg", replacement),
        str(inbox / "a.jpg"): lambda: _append(inbox / "a.jpg", tail),
        str(inbox / "s.jpg"): lambda: _swap_for_link(inbox / "s.jpg", secret),
    }
    real_finish = Router._finish

    def act_then_finish(self: Router, move: PendingMove, *, resumed: bool) -> Path | None:
        if (act := acts.pop(move.source_path, None)) is not None:
            act()  # after decoding and classification, before the move: the worst moment
        return real_finish(self, move, resumed=resumed)

    monkeypatch.setattr(Router, "_finish", act_then_finish)
    with daemon_thread(station):
        for name, data in originals.items():
            publish(inbox / name, data)
        # The new contents come back as new arrivals and get classified on their own.
        new_contents = {sha256_hex(replacement), sha256_hex(appended)}
        finished = wait_for(
            lambda: not acts and settled(station) and new_contents <= _done(station),
            SETTLE_TIMEOUT,
        )
    wrong = misfiled(station)
    links = [str(p) for p in destination_files(station) if p.is_symlink()]
    link_rejects = query(station, "SELECT final_path FROM rejects WHERE reason LIKE 'symbolic%'")
    report(
        "move races 2: bytes changed after classification",
        {
            "files filed under another content's decision": len(wrong),
            "new contents classified on their own": len(
                {sha256_hex(replacement), sha256_hex(appended)} & _done(station)
            ),
            "symlinks in a destination": len(links),
            "of them quarantined as reject (never followed)": len(link_rejects),
            "outside file intact": secret.is_file()
            and sha256_of(secret) == sha256_hex(noise_jpeg(300)),
        },
    )
    assert wrong == [], f"filed under another content's decision: {wrong}"
    assert finished, "the daemon did not settle"
    assert {sha256_hex(replacement), sha256_hex(appended)} <= _done(station)
    # The swapped-in link is never filed under an image's decision; as any link found in an
    # inbox it is a reject, quarantined as a link.
    quarantine = station.config().paths.quarantine
    assert all(quarantine in Path(p).parents for p in links), links
    assert len(links) == len(link_rejects) == 1
    assert sha256_of(secret) == sha256_hex(noise_jpeg(300))
    assert check_invariant(station) == []


def _append(path: Path, tail: bytes) -> None:
    with path.open("ab") as upload:
        upload.write(tail)


def _swap_for_link(path: Path, target: Path) -> None:
    temporary = path.with_name(".swap-" + path.name)
    temporary.symlink_to(target)
    temporary.rename(path)


def _done(station: Station) -> set[str]:
    if not migrated(station):
        return set()
    rows = query(
        station, "SELECT sha256 FROM images WHERE state = 'done' AND final_path IS NOT NULL"
    )
    return {str(row[0]) for row in rows}


# --- 3: a sub-folder swapped for a symlink -------------------------------------------------------


def test_a_folder_swapped_for_a_symlink_never_leads_outside(
    station: Station, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    data = noise_jpeg(400)
    # The worst case: outside holds a file of the very name and bytes that were classified.
    victim = write_file(outside / "x.jpg", data)
    inbox_file = write_file(station.inbox / "sub" / "x.jpg", data)
    spy = OpenSpy([outside])
    real_finish = Router._finish
    swapped: list[str] = []

    def swap_then_finish(self: Router, move: PendingMove, *, resumed: bool) -> Path | None:
        if move.source_path == str(inbox_file) and not swapped:
            (station.inbox / "sub").rename(station.inbox / "sub-real")
            (station.inbox / "sub").symlink_to(outside, target_is_directory=True)
            swapped.append(move.source_path)
        return real_finish(self, move, resumed=resumed)

    monkeypatch.setattr(Router, "_finish", swap_then_finish)
    try:
        with daemon_thread(station):
            wait_until(lambda: bool(swapped), "the folder swap")
            finished = wait_for(
                lambda: settled(station) and sha256_hex(data) in contents_in_destinations(station),
                SETTLE_TIMEOUT,
            )
        touched = spy.events()
    finally:
        spy.close()
    outside_lost = 0 if victim.is_file() and sha256_of(victim) == sha256_hex(data) else 1
    report(
        "move races 3: a sub-folder swapped for a symlink to a folder outside",
        {
            "files outside the inbox moved or deleted": outside_lost,
            "opens or reads outside the inbox": len(touched),
            "the inbox's own file filed": sha256_hex(data) in contents_in_destinations(station),
        },
    )
    assert outside_lost == 0, f"{victim} was moved or deleted through inbox/sub"
    assert touched == [], touched[:5]
    assert (station.inbox / "sub").is_symlink()  # not an image name: never touched
    assert finished, "the inbox's own file (now in sub-real/) was not filed"
    assert check_invariant(station) == []


# --- 12: quarantine notes ------------------------------------------------------------------------


def test_each_quarantined_file_has_its_own_note(station: Station) -> None:
    bad = [b"not an image, the first" * 40, b"not an image, the second" * 40]
    path = station.inbox / "bad.jpg"
    quarantine = station.config().paths.quarantine
    with daemon_thread(station):
        publish(path, bad[0])
        wait_until(lambda: _final_path(station, bad[0]) is not None, "the first quarantine")
        first = _final_path(station, bad[0])
        assert first is not None
        first.unlink()  # staff dealt with the file and left its note
        publish(path, bad[1])
        wait_until(lambda: _final_path(station, bad[1]) is not None, "the second quarantine")
    notes = sorted(quarantine.rglob("*.txt"))
    second = _final_path(station, bad[1])
    assert second is not None
    own = second.with_name(second.name + ".txt")
    note = own.read_text(encoding="utf-8") if own.exists() else ""
    foreign = int(f"sha256: {sha256_hex(bad[1])}" not in note)
    report(
        "move races 12: a second bad file at a reused name",
        {
            "notes in quarantine": len(notes),
            "quarantined files showing another file's note": foreign,
            "second file at": second.name,
        },
    )
    assert foreign == 0, f"{own} shows another file's note:\n{note}"
    assert f"sha256: {sha256_hex(bad[0])}" not in note
    assert len(notes) == 2


def _final_path(station: Station, data: bytes) -> Path | None:
    if not migrated(station):
        return None
    rows = query(
        station,
        "SELECT final_path FROM images WHERE sha256 = ? AND state = 'done'",
        sha256_hex(data),
    )
    return Path(str(rows[0][0])) if rows and rows[0][0] else None
