"""`tigerwatch evaluate` and `calibrate` on built scores, checked against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.staff.metrics import wilson_interval
from tests.daemon_support import Station, make_station
from tests.staff_support import add_column, add_frames

# Five judged tigers and six judged not-tigers; thresholds 0.5 (review) and 0.2 (uncertain).
TIGERS = [0.9, 0.8, 0.6, 0.3, 0.1]
NOT_TIGERS = [0.7, 0.4, 0.2, 0.05, 0.01, 0.0]


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def _judge(station: Station, paths: list[Path], tiger: list[bool]) -> None:
    for verdict in (True, False):
        chosen = [
            str(path) for path, is_tiger in zip(paths, tiger, strict=True) if is_tiger is verdict
        ]
        flag = "--tiger" if verdict else "--not-tiger"
        if chosen:
            assert main(["verdict", "-c", str(station.config_path), flag, *chosen]) == 0


def _evaluate_json(station: Station, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert main(["evaluate", "-c", str(station.config_path), "--json"]) == 0
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_wilson_interval_matches_published_values() -> None:
    # Newcombe (1998), table I: 81/263 gives 0.2553-0.3662; by hand for 3 of 5: 0.2307-0.8824.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(3, 5) == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0


def test_evaluate_figures_match_a_hand_computation(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, TIGERS + NOT_TIGERS)
    _judge(station, paths, [True] * 5 + [False] * 6)
    # The first group is all frames (an "events" group follows: images.event_id exists).
    overall = _evaluate_json(station, capsys)["groups"][0]  # type: ignore[index]
    # >= 0.5: tigers 0.9, 0.8, 0.6 and not-tiger 0.7 flagged: precision 3/4, recall 3/5.
    review = overall["review"]
    assert (review["precision"]["hits"], review["precision"]["total"]) == (3, 4)
    assert (review["recall"]["hits"], review["recall"]["total"]) == (3, 5)
    assert (review["recall"]["low"], review["recall"]["high"]) == pytest.approx(
        (0.2307, 0.8824), abs=1e-4
    )
    # >= 0.2 adds tiger 0.3 and not-tigers 0.4, 0.2 (inclusive): precision 4/7, recall 4/5.
    staff = overall["review_or_uncertain"]
    assert (staff["precision"]["hits"], staff["precision"]["total"]) == (4, 7)
    assert staff["recall"]["value"] == pytest.approx(0.8)
    assert main(["evaluate", "-c", str(station.config_path)]) == 0
    out = capsys.readouterr().out
    assert "recall 0.600 (95% 0.231-0.882, 3/5)" in out
    assert "archive: no audit yet" in out


def test_evaluate_splits_by_light_and_counts_events_when_the_columns_exist(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, TIGERS + NOT_TIGERS)
    _judge(station, paths, [True] * 5 + [False] * 6)
    add_column(station, "infrared", [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0])
    # Events: tigers 0.9+0.8 one event, 0.3+0.1 another; not-tigers 0.7+0.4 one event.
    add_column(station, "event_id", [1, 1, 2, 3, 3, 4, 4, 5, 6, 7, 8])
    groups = {group["name"]: group for group in _evaluate_json(station, capsys)["groups"]}  # type: ignore[attr-defined]
    assert set(groups) == {"all frames", "infrared", "colour", "events"}
    infrared = groups["infrared"]["review"]  # tigers 0.9, 0.8; not-tigers 0.7, 0.4
    assert (infrared["precision"]["hits"], infrared["precision"]["total"]) == (2, 3)
    events = groups[
        "events"
    ]  # tiger events scored 0.9, 0.6, 0.3; not-tiger 0.7, 0.2, 0.05, 0.01, 0
    assert (events["tigers"], events["not_tigers"]) == (3, 5)
    assert events["review"]["recall"]["hits"] == 2
    assert events["review_or_uncertain"]["precision"]["total"] == 5


def test_evaluate_says_when_there_are_too_few_verdicts(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, [0.9, 0.1])
    assert main(["evaluate", "-c", str(station.config_path)]) == 1
    assert "no frame has a staff verdict yet" in capsys.readouterr().err
    _judge(station, paths, [True, False])
    assert main(["evaluate", "-c", str(station.config_path)]) == 0
    assert "precision too few verdicts (1 of 5 needed)" in capsys.readouterr().out


def test_evaluate_plot_writes_a_png(station: Station, tmp_path: Path) -> None:
    paths = add_frames(station, TIGERS + NOT_TIGERS)
    _judge(station, paths, [True] * 5 + [False] * 6)
    out = tmp_path / "plots" / "evaluate.png"
    assert main(["evaluate", "-c", str(station.config_path), "--plot", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_calibrate_reaches_the_target_recall_as_computed_by_hand(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    # 20 tigers scored 0.05, 0.10, ... 1.00 and 20 not-tigers scored 0.01 ... 0.20 over 39 h.
    tigers = [round(0.05 * (i + 1), 2) for i in range(20)]
    others = [round(0.01 * (i + 1), 2) for i in range(20)]
    paths = add_frames(station, tigers + others)
    _judge(station, paths, [True] * 20 + [False] * 20)
    assert main(["calibrate", "-c", str(station.config_path), "--target-recall", "0.95"]) == 0
    out = capsys.readouterr().out
    # Recall 19/20 needs the 19th highest tiger score, 0.10: flagged are 19 tigers and the
    # not-tigers 0.10 ... 0.20 (11 of them): precision 19/30. The lower 0.05 gives 20/36, worse.
    assert "  uncertain_threshold: 0.1\n" in out
    assert "  positive_threshold: 0.5\n" in out
    assert "recall 0.950 and precision 0.633" in out
    # 30 frames at or above 0.1 over 39 hours of arrivals: 30 / (39 / 24) = 18.46 a day.
    assert "about 18.5 frames a day" in out


def test_calibrate_refuses_on_too_few_verdicts(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, [0.9] * 20 + [0.1] * 19)
    _judge(station, paths, [True] * 20 + [False] * 19)
    assert main(["calibrate", "-c", str(station.config_path)]) == 1
    err = capsys.readouterr().err
    assert "20 frames judged tiger and 19 judged not tiger" in err
    assert "at least 20 of each" in err
    assert main(["calibrate", "-c", str(station.config_path), "--min-verdicts", "19"]) == 0
