"""`tigerwatch verdict`: staff verdicts from the command line and from CSV files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemon.cli import main
from tests.daemon_support import Station, make_station, sha256_of
from tests.staff_support import add_frames


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def _verdicts(station: Station) -> list[tuple[int, str, str]]:
    with sqlite3.connect(station.db_path) as connection:
        return connection.execute(
            "SELECT image_id, verdict, source FROM verdicts ORDER BY id"
        ).fetchall()


def test_cli_and_csv_import_give_the_same_verdicts(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_cli = make_station(tmp_path / "cli", tiny_model_dir)
    by_csv = make_station(tmp_path / "csv", tiny_model_dir)
    cli_paths = add_frames(by_cli, [0.9, 0.1, 0.3])
    csv_paths = add_frames(by_csv, [0.9, 0.1, 0.3])
    assert main(["verdict", "-c", str(by_cli.config_path), "--tiger", str(cli_paths[0])]) == 0
    args = ["verdict", "-c", str(by_cli.config_path), "--not-tiger", *map(str, cli_paths[1:])]
    assert main(args) == 0
    table = by_csv.root / "export.csv"
    table.write_text(
        "path,sha256,verdict\n"
        f"{csv_paths[0]},,tiger\n"
        f",{sha256_of(csv_paths[1])},not-tiger\n"
        f"review/uncertain/2026-11-01/{csv_paths[2].name},,not-tiger\n"
    )
    assert main(["verdict", "-c", str(by_csv.config_path), "--import", str(table)]) == 0
    assert "recorded 3 verdicts" in capsys.readouterr().out
    cli_rows, csv_rows = _verdicts(by_cli), _verdicts(by_csv)
    assert [row[:2] for row in cli_rows] == [row[:2] for row in csv_rows]
    assert [row[:2] for row in cli_rows] == [(1, "tiger"), (2, "not-tiger"), (3, "not-tiger")]
    assert {row[2] for row in cli_rows} == {"cli"} and {row[2] for row in csv_rows} == {"import"}


def test_a_changed_verdict_keeps_history_and_the_latest_counts(station: Station) -> None:
    (path,) = add_frames(station, [0.9])
    config = str(station.config_path)
    assert main(["verdict", "-c", config, "--tiger", str(path)]) == 0
    assert main(["verdict", "-c", config, "--not-tiger", str(path)]) == 0
    assert [row[1] for row in _verdicts(station)] == ["tiger", "not-tiger"]
    from daemon.storage.database import open_migrated_database
    from daemon.storage.staff import StaffStore

    store = StaffStore(open_migrated_database(f"sqlite:///{station.db_path}"))
    assert [frame.is_tiger for frame in store.scored_frames()] == [False]


def test_a_frame_moved_by_staff_is_found_by_its_content(station: Station) -> None:
    (path,) = add_frames(station, [0.9])
    moved = station.root / "review" / "sorted" / path.name
    moved.parent.mkdir(parents=True)
    path.rename(moved)
    assert main(["verdict", "-c", str(station.config_path), "--tiger", str(moved)]) == 0
    assert _verdicts(station) == [(1, "tiger", "cli")]


def test_unknown_paths_and_bad_rows_are_named_and_the_rest_recorded(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, [0.9, 0.1])
    stranger = station.root / "stranger.jpg"
    stranger.write_bytes(b"never seen")
    config = str(station.config_path)
    args = ["verdict", "-c", config, "--tiger", str(stranger), str(station.root / "gone.jpg")]
    assert main([*args, str(paths[0])]) == 1
    err = capsys.readouterr().err
    assert f"{stranger}: not a frame tigerwatch has classified" in err
    assert "gone.jpg: cannot read" in err
    table = station.root / "bad.csv"
    table.write_text(f"path,verdict\n{paths[1]},maybe\n{paths[1]},not-tiger\n")
    assert main(["verdict", "-c", config, "--import", str(table)]) == 1
    captured = capsys.readouterr()
    assert f"{table}:2: verdict 'maybe' is not tiger or not-tiger" in captured.err
    assert "recorded 1 verdicts" in captured.out
    assert _verdicts(station) == [(1, "tiger", "cli"), (2, "not-tiger", "import")]


def test_a_csv_without_the_needed_columns_is_refused(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    add_frames(station, [0.9])
    table = station.root / "wrong.csv"
    table.write_text("file,label\na.jpg,tiger\n")
    assert main(["verdict", "-c", str(station.config_path), "--import", str(table)]) == 1
    assert "needs a 'verdict' column and a 'path' or 'sha256' column" in capsys.readouterr().err
    assert _verdicts(station) == []
