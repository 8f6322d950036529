"""Overlapping folders are refused at load time, after links are resolved (real folders here)."""

from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import load_config
from tests.test_config import minimal_config, problems_for, write_config


def test_default_layout_with_nested_subfolders_is_accepted(tmp_path: Path) -> None:
    # uncertain sits inside review and duplicates inside archive by default: that is fine.
    config = load_config(write_config(tmp_path, minimal_config()))

    assert config.paths.uncertain == tmp_path / "review" / "uncertain"
    assert config.paths.duplicates == tmp_path / "archive" / "duplicates"


def test_an_inbox_inside_another_inbox_is_refused(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"]["inbox"] = ["inbox", "inbox/cam1"]

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[1].path: {tmp_path / 'inbox' / 'cam1'} "
        f"lies inside inbox {tmp_path / 'inbox'} (paths.inbox[0]); every frame in it would be "
        "picked up twice and recorded as its own duplicate",
    )


def test_inboxes_overlapping_through_a_symlinked_parent_are_refused(tmp_path: Path) -> None:
    # /srv/ftp -> /data/ftp: "ftp/cam1" and "data/ftp" look unrelated but share frames.
    (tmp_path / "data" / "ftp" / "cam1").mkdir(parents=True)
    (tmp_path / "ftp").symlink_to(tmp_path / "data" / "ftp", target_is_directory=True)
    data = minimal_config()
    data["paths"]["inbox"] = ["ftp/cam1", "data/ftp"]

    problems = problems_for(tmp_path, data)

    assert len(problems) == 1
    assert problems[0].startswith(
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[0].path: {tmp_path / 'ftp' / 'cam1'} "
        f"lies inside inbox {tmp_path / 'data' / 'ftp'} (paths.inbox[1])"
    )


def test_a_destination_reached_through_a_symlink_into_an_inbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "inbox" / "sorted").mkdir(parents=True)
    (tmp_path / "out").symlink_to(tmp_path / "inbox" / "sorted", target_is_directory=True)
    data = minimal_config()
    data["paths"]["review"] = "out"

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.review: lies inside inbox "
        f"{tmp_path / 'inbox'} (paths.inbox[0]); the daemon would re-ingest its own output",
    )


def test_an_inbox_inside_a_destination_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "archive" / "drop").mkdir(parents=True)
    (tmp_path / "drop").symlink_to(tmp_path / "archive" / "drop", target_is_directory=True)
    data = minimal_config()
    data["paths"]["inbox"] = "drop/"

    problems = problems_for(tmp_path, data)

    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: paths.inbox[0].path: lies inside the archive folder "
        f"{tmp_path / 'archive'}; the daemon would re-ingest its own output",
    )


def test_review_archive_and_quarantine_in_one_folder_are_refused(tmp_path: Path) -> None:
    data = minimal_config()
    data["paths"] |= {"review": "out", "archive": "out", "quarantine": "./out/"}
    out = tmp_path / "out"
    config_file = tmp_path / "tigerwatch.yaml"
    shared = "each outcome needs its own folder or sorted frames become indistinguishable"

    problems = problems_for(tmp_path, data)

    # Both destinations are named with their keys; uncertain/duplicates still differ.
    assert problems == (
        f"{config_file}: paths.archive: {out} is the same folder as paths.review {out} "
        f"(both {out}); {shared}",
        f"{config_file}: paths.quarantine: {out} is the same folder as paths.review {out} "
        f"(both {out}); {shared}",
    )


def test_two_destinations_sharing_a_folder_through_a_symlink_are_refused(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "maybe").symlink_to(tmp_path / "bad", target_is_directory=True)
    data = minimal_config()
    data["paths"] |= {"uncertain": "maybe", "quarantine": "bad"}

    problems = problems_for(tmp_path, data)

    assert len(problems) == 1
    assert problems[0].startswith(
        f"{tmp_path / 'tigerwatch.yaml'}: paths.quarantine: {tmp_path / 'bad'} is the same "
        f"folder as paths.uncertain {tmp_path / 'maybe'} (both {(tmp_path / 'bad').resolve()})"
    )


def test_check_config_refuses_an_overlap_and_names_both_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = minimal_config()
    data["paths"]["quarantine"] = "review"
    config_file = write_config(tmp_path, data)

    code = main(["check-config", "-c", str(config_file)])

    err = capsys.readouterr().err
    assert code == 2
    assert f"{config_file}: paths.quarantine: " in err
    assert f"same folder as paths.review {tmp_path / 'review'}" in err


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        (
            "inbox/backups",
            "{root}/inbox/backups lies inside inbox {root}/inbox (paths.inbox[0]); the daemon "
            "would take its own backups for uploads",
        ),
        (
            "review/uncertain/db",
            "{root}/review/uncertain/db lies inside the review folder {root}/review "
            "(paths.review); the database's backups would be mixed with the sorted frames",
        ),
        (
            "quarantine",
            "{root}/quarantine is the quarantine folder {root}/quarantine (paths.quarantine); "
            "the database's backups would be mixed with the sorted frames",
        ),
    ],
)
def test_a_backup_folder_inside_an_inbox_or_a_destination_is_refused(
    tmp_path: Path, backup: str, expected: str
) -> None:
    data = minimal_config()
    data["database"] = {"backup": {"folder": backup}}

    problems = problems_for(tmp_path, data)

    print(f"\n[{backup}] {problems}")
    assert problems == (
        f"{tmp_path / 'tigerwatch.yaml'}: database.backup.folder: "
        + expected.format(root=tmp_path),
    )


def test_a_backup_folder_beside_the_station_folders_is_accepted(tmp_path: Path) -> None:
    data = minimal_config()
    data["database"] = {"backup": {"folder": "backups"}}

    config = load_config(write_config(tmp_path, data))

    assert config.database.backup.folder == tmp_path / "backups"
