"""`tigerwatch rescore`: decisions again from the stored embeddings, without decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from daemon.cli import main
from daemon.outcomes import Decision, decide, destination_for
from tests.daemon_support import (
    Station,
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


def test_rescore_refuses_apply_for_now(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    before = query(station, "SELECT id, decision, final_path FROM images ORDER BY id")
    assert main(["rescore", "-c", str(station.config_path), "--apply"]) == 2
    assert "rescore --apply is not available yet" in capsys.readouterr().err
    assert query(station, "SELECT id, decision, final_path FROM images ORDER BY id") == before


def test_rescore_progress_goes_to_stderr_and_the_json_to_stdout(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["rescore", "-c", str(station.config_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rescored"] == FRAMES
    progress = [line for line in captured.err.splitlines() if line.startswith("rescore: ")]
    assert progress and progress[-1].startswith(f"rescore: {FRAMES}/{FRAMES} frames (100%)")
