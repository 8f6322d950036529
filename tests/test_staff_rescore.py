"""`tigerwatch rescore`: decisions again from the stored embeddings, without decoding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.cli import main
from daemon.outcomes import Decision, decide, destination_for
from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    images_done,
    make_station,
    noise_jpeg,
    query,
    settled,
    wait_until,
    write_file,
)

FRAMES = 10


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    """Frames classified by the real daemon: their embeddings and scores are stored."""
    station = make_station(tmp_path / "station", tiny_model_dir)
    for number in range(FRAMES):
        write_file(station.inbox / f"IMG_{number:04d}.JPG", noise_jpeg(100 + number, (96, 64)))
    with daemon_thread(station):
        wait_until(lambda: images_done(station) == FRAMES and settled(station), "frames filed")
    return station


def _rescore(station: Station, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["rescore", "-c", str(station.config_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


def _set_thresholds(station: Station, positive: float, uncertain: float) -> None:
    settings = yaml.safe_load(station.config_path.read_text())
    settings["decision"] = {"positive_threshold": positive, "uncertain_threshold": uncertain}
    station.config_path.write_text(yaml.safe_dump(settings))


def test_rescore_with_the_same_configuration_changes_nothing(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _rescore(station, capsys)
    assert report["rescored"] == FRAMES
    assert report["changed"] == 0 and report["transitions"] == {}


def test_rescore_after_new_thresholds_matches_a_hand_computation(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = query(
        station,
        "SELECT i.id, i.decision, c.target_score FROM images i "
        "JOIN classifications c ON c.image_id = i.id ORDER BY c.target_score",
    )
    scores = [float(str(score)) for _, _, score in rows]
    # New thresholds between stored scores (never on one): a third up, two thirds up.
    positive = (scores[6] + scores[7]) / 2
    uncertain = (scores[2] + scores[3]) / 2
    _set_thresholds(station, positive, uncertain)
    judged_id = rows[0][0]  # the lowest score: it would go to archive, but staff judged it
    ((judged_path,),) = query(station, "SELECT final_path FROM images WHERE id = ?", judged_id)
    assert main(["verdict", "-c", str(station.config_path), "--tiger", str(judged_path)]) == 0
    expected: dict[str, int] = {}
    for image_id, before, score in rows:
        now = decide(float(str(score)), positive_threshold=positive, uncertain_threshold=uncertain)
        if image_id != judged_id and now.value != before:
            move = f"{destination_for(Decision(str(before)))} -> {destination_for(now)}"
            expected[move] = expected.get(move, 0) + 1
    report = _rescore(station, capsys)
    assert report["transitions"] == expected
    assert report["changed"] == sum(expected.values()) > 0
    assert (report["rescored"], report["judged"]) == (FRAMES - 1, 1)
    assert main(["rescore", "-c", str(station.config_path)]) == 0
    out = capsys.readouterr().out
    for move, count in expected.items():
        assert f"  {move}: {count}\n" in out
    assert "skipped 1 frames with a staff verdict" in out
    # Nothing was recorded or moved.
    assert query(station, "SELECT count(*) FROM classifications") == [(FRAMES,)]


def _apply(station: Station, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["rescore", "-c", str(station.config_path), "--apply", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


def _placed(station: Station) -> list[tuple[object, ...]]:
    return query(station, "SELECT id, decision, final_path FROM images ORDER BY id")


def _files(station: Station) -> list[Path]:
    return sorted(p for d in station.destinations() if d.exists() for p in d.rglob("*.JPG"))


def test_rescore_apply_records_moves_and_leaves_judged_frames_alone(
    station: Station, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = query(
        station,
        "SELECT i.id, c.decision, c.target_score, c.id FROM images i "
        "JOIN classifications c ON c.image_id = i.id ORDER BY c.target_score",
    )
    scores = [float(str(score)) for _, _, score, _ in rows]
    positive, uncertain = (scores[6] + scores[7]) / 2, (scores[2] + scores[3]) / 2
    _set_thresholds(station, positive, uncertain)
    now = {
        image_id: decide(
            float(str(score)), positive_threshold=positive, uncertain_threshold=uncertain
        )
        for image_id, _, score, _ in rows
    }
    changing = [image_id for image_id, before, _, _ in rows if now[image_id].value != before]
    assert len(changing) >= 3, rows
    judged, on_desk, *moving = changing
    before = dict((r[0], r[1:]) for r in _placed(station))
    ((judged_path,),) = query(station, "SELECT final_path FROM images WHERE id = ?", judged)
    assert main(["verdict", "-c", str(station.config_path), "--not-tiger", str(judged_path)]) == 0
    # Staff took one frame out to look at it: not where tigerwatch filed it.
    desk = tmp_path / "desk" / Path(str(before[on_desk][1])).name
    desk.parent.mkdir()
    Path(str(before[on_desk][1])).rename(desk)

    report = _apply(station, capsys)

    assert report["applied"] == {
        "settled": 0,
        "moved": len(moving),
        "not_where_filed": 1,
        "failed": 0,
    }
    assert report["decisions_changed"] == len(moving) + 1  # the desk frame's too
    assert report["changed"] == len(moving) + 1 and (report["judged"], report["rescored"]) == (1, 9)
    # Each own event of one frame (no capture time): the events follow their frame.
    assert report["event_transitions"] == report["transitions"]
    after = dict((r[0], r[1:]) for r in _placed(station))
    for image_id in moving:
        decision, final_path = after[image_id]
        assert decision == now[image_id].value
        root = station.root / {"positive": "review", "uncertain": "review/uncertain"}.get(
            str(decision), "archive"
        )
        assert Path(str(final_path)).is_file() and root in Path(str(final_path)).parents
        assert not Path(str(before[image_id][1])).exists()
        ((reason, refiled),) = query(
            station, "SELECT reason, final_path FROM refiles WHERE image_id = ?", image_id
        )
        assert reason == f"rescore: {before[image_id][0]} -> {now[image_id].value}"
        assert refiled == final_path
    assert after[judged] == before[judged] and after[on_desk] == before[on_desk]
    ((note,),) = query(station, "SELECT note FROM refiles WHERE image_id = ?", on_desk)
    assert "not at the path the daemon filed it at" in str(note)
    # New rows: the same embedding and model, the new decision, marked as rescored.
    new_rows = query(
        station,
        "SELECT n.image_id, n.decision, n.rescored_from, n.embedding = o.embedding, "
        "n.model_name = o.model_name, n.positive_threshold, n.head_id FROM classifications n "
        "JOIN classifications o ON o.id = n.rescored_from ORDER BY n.image_id",
    )
    originals = {image_id: row_id for image_id, _, _, row_id in rows}
    assert new_rows == sorted(
        (i, now[i].value, originals[i], 1, 1, pytest.approx(positive), None)
        for i in [on_desk, *moving]
    )
    assert query(station, "SELECT count(*) FROM classifications WHERE image_id = ?", judged) == [
        (1,)
    ]

    # A second run changes nothing; the desk frame is reported again, still left alone.
    files = _files(station)
    again = _apply(station, capsys)
    assert (again["decisions_changed"], again["event_transitions"]) == (0, {})
    assert again["applied"] == {"settled": 0, "moved": 0, "not_where_filed": 1, "failed": 0}
    assert _files(station) == files and dict((r[0], r[1:]) for r in _placed(station)) == after
    desk.rename(Path(str(before[on_desk][1])))
    assert check_invariant(station) == []
    # The daemon starts on what rescore left: the events rescore changed are filed again, so
    # the frame staff put back goes with its event now; nothing else moves, a new frame is filed.
    desk_path = Path(str(before[on_desk][1]))
    others = [f for f in _files(station) if f != desk_path]
    write_file(station.inbox / "IMG_new.JPG", noise_jpeg(999, (96, 64)))
    pending = "SELECT count(*) FROM events WHERE refile_pending > 0"
    with daemon_thread(station):
        wait_until(
            lambda: (
                images_done(station) == FRAMES + 1
                and settled(station)
                and query(station, pending) == [(0,)]
            ),
            "filed",
        )
    ((decision, final_path),) = query(
        station, "SELECT decision, final_path FROM images WHERE id = ?", on_desk
    )
    assert decision == now[on_desk].value and not desk_path.exists()
    assert sorted([*others, Path(str(final_path))]) == [
        f for f in _files(station) if f.name != "IMG_new.JPG"
    ]
    assert check_invariant(station) == []


def test_rescore_apply_refuses_while_the_daemon_runs(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_thresholds(station, 0.99, 0.98)
    write_file(station.inbox / "IMG_new.JPG", noise_jpeg(999, (96, 64)))
    with daemon_thread(station):
        # A frame filed: the daemon is up, and holds the database's lock.
        wait_until(lambda: images_done(station) == FRAMES + 1 and settled(station), "filed")
        before = _placed(station)
        capsys.readouterr()
        assert main(["rescore", "-c", str(station.config_path), "--apply"]) == 4
        err = capsys.readouterr().err
    assert "is in use" in err and "stop it (systemctl stop tigerwatch)" in err
    assert _placed(station) == before
    assert query(station, "SELECT count(*) FROM classifications") == [(FRAMES + 1,)]


def test_rescore_progress_goes_to_stderr_and_the_json_to_stdout(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["rescore", "-c", str(station.config_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rescored"] == FRAMES
    progress = [line for line in captured.err.splitlines() if line.startswith("rescore: ")]
    assert progress and progress[-1].startswith(f"rescore: {FRAMES}/{FRAMES} frames (100%)")
