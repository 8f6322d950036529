"""The verdict folders: staff move frames (or folders of frames) there, the daemon records them."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import ConfigError
from daemon.intake.names import NameFilter
from daemon.staff.audit import draw_audit
from daemon.staff.folder_verdicts import FolderVerdicts
from daemon.staff.folders import Sighting, VerdictFolders, verdict_folders
from daemon.storage.database import open_migrated_database
from daemon.storage.schema import VerdictValue
from daemon.storage.staff import StaffStore
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    images_done,
    make_station,
    noise_jpeg,
    query,
    settled,
    sha256_hex,
    wait_until,
    write_file,
)
from tests.staff_support import add_frames

TIGER = VerdictValue.TIGER
NOT_TIGER = VerdictValue.NOT_TIGER


def _verdicts(station: Station) -> list[tuple[int, str, str]]:
    with sqlite3.connect(station.db_path) as connection:
        return connection.execute(
            "SELECT image_id, verdict, source FROM verdicts ORDER BY id"
        ).fetchall()


def _final_paths(station: Station) -> dict[str, Path]:
    """sha256 -> where the database says the frame is."""
    rows = query(station, "SELECT sha256, final_path FROM images")
    return {str(sha256): Path(str(path)) for sha256, path in rows}


def _image_id(station: Station, sha256: str) -> int:
    ((image_id,),) = query(station, "SELECT id FROM images WHERE sha256 = ?", sha256)
    assert isinstance(image_id, int)
    return image_id


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    path.rename(target)  # what a file manager (or Samba) does on one disk
    return target


def test_moving_frames_and_event_folders_into_the_verdict_folders_records_verdicts(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    contents = [noise_jpeg(seed) for seed in range(6)]
    shas = [sha256_hex(data) for data in contents]
    for number, data in enumerate(contents):
        write_file(station.inbox / f"IMG_{number:04d}.JPG", data)
    tiger_folder = station.root / "review" / "verdicts" / "tiger"
    not_tiger_folder = station.root / "review" / "verdicts" / "not-tiger"
    with daemon_thread(station):
        wait_until(lambda: images_done(station) == 6 and settled(station), "frames filed")
        filed = _final_paths(station)
        # One frame into each folder, then an event folder of two frames into each.
        one_tiger = _move(filed[shas[0]], tiger_folder)
        one_not = _move(filed[shas[1]], not_tiger_folder)
        events = station.root / "staff-desk"
        for name, numbers in (("event-7", (2, 3)), ("event-8", (4, 5))):
            for number in numbers:
                _move(filed[shas[number]], events / name)
        (events / "event-7").rename(tiger_folder / "event-7")
        (events / "event-8").rename(not_tiger_folder / "event-8")
        wait_until(lambda: len(_verdicts(station)) == 6, "six folder verdicts")
        wait_until(lambda: _final_paths(station)[shas[5]].parent.name == "event-8", "paths")
        # Changing one's mind: the frame goes to the other folder.
        changed = _move(one_tiger, not_tiger_folder)
        wait_until(lambda: len(_verdicts(station)) == 7, "the changed verdict")
        wait_until(lambda: _final_paths(station)[shas[0]] == changed, "the changed path")
    ids = [_image_id(station, sha) for sha in shas]
    expected = [
        (ids[0], "tiger"),
        (ids[1], "not-tiger"),
        *sorted([(ids[2], "tiger"), (ids[3], "tiger"), (ids[4], "not-tiger")]),
        (ids[5], "not-tiger"),
        (ids[0], "not-tiger"),
    ]
    rows = _verdicts(station)
    assert sorted(row[:2] for row in rows) == sorted(expected)
    assert rows[-1][:2] == (ids[0], "not-tiger")  # history kept, the latest counts
    assert {row[2] for row in rows} == {"folder"}
    final = _final_paths(station)
    assert final[shas[0]] == changed and final[shas[1]] == one_not
    assert final[shas[2]] == tiger_folder / "event-7" / "IMG_0002.JPG"
    assert final[shas[4]] == not_tiger_folder / "event-8" / "IMG_0004.JPG"
    assert check_invariant(station, set(shas)) == []


@pytest.fixture
def built(tmp_path: Path, tiny_model_dir: Path) -> Station:
    """A station database with filed frames (no daemon): review, uncertain, archive."""
    station = make_station(tmp_path / "station", tiny_model_dir)
    add_frames(station, [0.9, 0.8, 0.3, 0.1, 0.05])
    return station


def _parts(station: Station) -> tuple[VerdictFolders, FolderVerdicts, StaffStore]:
    config = station.config()
    folders = verdict_folders(config.paths.review, config.verdicts)
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    store = StaffStore(open_migrated_database(config.database.url))
    finder = VerdictFolders(config.paths.review, folders, NameFilter([".jpg"]))
    return finder, FolderVerdicts(store), store


def _record_scan(station: Station) -> None:
    """What the daemon does on each scan, with a fresh memory (as after a restart)."""
    finder, recorder, _ = _parts(station)
    for sighting in finder.scan():
        recorder.record(sighting)


def test_folder_and_cli_give_the_same_rows(tmp_path: Path, tiny_model_dir: Path) -> None:
    by_folder = make_station(tmp_path / "folder", tiny_model_dir)
    by_cli = make_station(tmp_path / "cli", tiny_model_dir)
    folder_paths = add_frames(by_folder, [0.9, 0.1, 0.3])
    cli_paths = add_frames(by_cli, [0.9, 0.1, 0.3])
    review = by_folder.root / "review" / "verdicts"
    _move(folder_paths[0], review / "tiger")
    for path in folder_paths[1:]:
        _move(path, review / "not-tiger")
    _record_scan(by_folder)
    config = str(by_cli.config_path)
    assert main(["verdict", "-c", config, "--tiger", str(cli_paths[0])]) == 0
    assert main(["verdict", "-c", config, "--not-tiger", *map(str, cli_paths[1:])]) == 0
    folder_rows, cli_rows = _verdicts(by_folder), _verdicts(by_cli)
    assert [row[:2] for row in folder_rows] == [row[:2] for row in cli_rows]
    assert [row[:2] for row in folder_rows] == [(1, "tiger"), (2, "not-tiger"), (3, "not-tiger")]
    assert {row[2] for row in folder_rows} == {"folder"}
    assert check_invariant(by_folder) == []


def test_the_same_frame_seen_again_adds_no_row(built: Station) -> None:
    frame = _move(station_frames(built)[0], built.root / "review" / "verdicts" / "tiger")
    finder, recorder, _ = _parts(built)
    recorder.record(Sighting(frame, TIGER))
    recorder.record(Sighting(frame, TIGER))
    _record_scan(built)  # a restart: nothing remembered in memory, the database says enough
    assert _verdicts(built) == [(1, "tiger", "folder")]
    assert list(finder.scan()) == [Sighting(frame, TIGER)]


def test_a_cli_verdict_on_a_frame_in_a_folder_is_not_undone_by_the_next_scan(
    built: Station,
) -> None:
    frame = _move(station_frames(built)[0], built.root / "review" / "verdicts" / "tiger")
    _record_scan(built)
    assert main(["verdict", "-c", str(built.config_path), "--not-tiger", str(frame)]) == 0
    _record_scan(built)
    assert [row[1:] for row in _verdicts(built)] == [("tiger", "folder"), ("not-tiger", "cli")]


def test_a_move_seen_with_its_source_records_where_the_frame_went(
    built: Station,
) -> None:
    source = station_frames(built)[2]  # an uncertain frame
    frame = _move(source, built.root / "review" / "verdicts" / "not-tiger")
    _, recorder, _ = _parts(built)
    recorder.record(Sighting(frame, NOT_TIGER, moved_from=source))
    assert _verdicts(built) == [(3, "not-tiger", "folder")]
    assert query(built, "SELECT final_path FROM images WHERE id = 3") == [(str(frame),)]
    assert check_invariant(built) == []


def test_another_frame_put_where_a_judged_one_was_gets_its_own_verdict(built: Station) -> None:
    """Hostile review F16: frame A was judged and deleted from the verdict folder; frame B put at
    A's recorded name was taken for A, and B's verdict was recorded on A."""
    first, second = station_frames(built)[:2]
    not_tiger = built.root / "review" / "verdicts" / "not-tiger"
    judged = _move(first, not_tiger)
    _record_scan(built)
    judged.unlink()  # judged frames cleared out of the folder
    second.rename(judged)  # another frame, by chance under the same name (IMG_0001.JPG)
    _record_scan(built)  # seen by a scan only, as over a share written from another computer
    _move(judged, built.root / "review" / "verdicts" / "tiger")  # staff change their mind on B
    _record_scan(built)
    assert _verdicts(built) == [
        (1, "not-tiger", "folder"),
        (2, "not-tiger", "folder"),
        (2, "tiger", "folder"),
    ]
    finals = dict(query(built, "SELECT id, final_path FROM images WHERE id IN (1, 2)"))
    assert finals[2] == str(built.root / "review" / "verdicts" / "tiger" / judged.name)
    assert finals[1] == str(judged)  # A's last known place: its file is gone, never B's


def test_a_frame_a_viewer_re_saved_keeps_its_verdicts(built: Station) -> None:
    """Second hostile review g3: a viewer rewrote a frame's EXIF in place (new bytes), then staff
    judged it: by content alone it was "not a frame tigerwatch has classified"."""
    first, second = station_frames(built)[:2]
    for frame in (first, second):
        frame.write_bytes(frame.read_bytes() + b" rating=5")  # re-saved in place
    assert main(["verdict", "-c", str(built.config_path), "--not-tiger", str(second)]) == 0
    moved = _move(first, built.root / "review" / "verdicts" / "tiger")
    _, recorder, _ = _parts(built)
    recorder.record(Sighting(moved, TIGER, moved_from=first))
    assert [row[:2] for row in _verdicts(built)] == [(2, "not-tiger"), (1, "tiger")]
    assert query(built, "SELECT final_path FROM images WHERE id = 1") == [(str(moved),)]


def test_an_audit_link_moved_there_is_an_audit_verdict_and_the_frame_stays_put(
    built: Station,
) -> None:
    config = built.config()
    store = StaffStore(open_migrated_database(config.database.url))
    result = draw_audit(store, config.paths.review, 2, seed=1)
    assert result.linked == 2
    links = [Path(str(p)) for (p,) in query(built, "SELECT link_path FROM audit_samples")]
    before = _final_paths(built)
    verdicts = built.root / "review" / "verdicts"
    seen_moving = _move(links[0], verdicts / "tiger")
    _move(links[1], verdicts / "not-tiger")  # found by the scan only, by content
    _, recorder, _ = _parts(built)
    recorder.record(Sighting(seen_moving, TIGER, moved_from=links[0]))
    _record_scan(built)
    assert {row[2] for row in _verdicts(built)} == {"audit"}
    assert len(_verdicts(built)) == 2
    assert _final_paths(built) == before  # the archived frames did not move
    assert check_invariant(built) == []


def test_a_file_that_is_no_frame_is_logged_once_and_left_alone(
    built: Station, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = write_file(built.root / "review" / "verdicts" / "tiger" / "x.jpg", b"not known")
    finder, recorder, _ = _parts(built)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            for sighting in finder.scan():
                recorder.record(sighting)
    assert caplog.text.count("x.jpg: not a frame tigerwatch has classified") == 1
    assert stranger.read_bytes() == b"not known"
    assert _verdicts(built) == []


def test_the_owner_of_the_file_is_who_gave_the_verdict(built: Station) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    frame = _move(station_frames(built)[0], built.root / "review" / "verdicts" / "tiger")
    os.chown(frame, 65534, -1)  # nobody: as Samba leaves a file a staff account wrote
    _record_scan(built)
    ((who,),) = query(built, "SELECT who FROM verdicts")
    assert who == "nobody" or who == "65534"


def station_frames(station: Station) -> list[Path]:
    return [Path(str(p)) for (p,) in query(station, "SELECT final_path FROM images ORDER BY id")]


def test_verdict_folder_names_come_from_the_configuration(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = {"folder": "вердикты", "tiger": "тигр", "not_tiger": "не-тигр"}
    station = make_station(tmp_path / "station", tiny_model_dir, verdicts=settings)
    config = station.config()
    folders = verdict_folders(config.paths.review, config.verdicts)
    assert folders == {
        TIGER: config.paths.review / "вердикты" / "тигр",
        NOT_TIGER: config.paths.review / "вердикты" / "не-тигр",
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tiger": "same", "not_tiger": "same"}, "verdicts.not_tiger: must differ"),
        ({"folder": "a/b"}, "verdicts.folder: must be one folder name"),
        ({"tiger": ".hidden"}, "verdicts.tiger: must be one folder name"),
    ],
)
def test_bad_verdict_folder_names_are_refused(
    tmp_path: Path, tiny_model_dir: Path, settings: dict[str, object], message: str
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir, verdicts=settings)
    with pytest.raises(ConfigError, match=message):
        station.config()
