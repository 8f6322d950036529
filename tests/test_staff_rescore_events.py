"""`tigerwatch rescore --apply` on events: a burst goes where its best frame now sends it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.cli import main
from tests.daemon_support import (
    SETTLE_TIMEOUT,
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    wait_for,
)
from tests.test_event_routing import burst, drop, idle, scores


def _thresholds(station: Station, threshold: float) -> None:
    settings = yaml.safe_load(station.config_path.read_text())
    settings["decision"] = {"positive_threshold": threshold, "uncertain_threshold": threshold}
    station.config_path.write_text(yaml.safe_dump(settings))


def _apply(station: Station, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["rescore", "-c", str(station.config_path), "--apply", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


def _where(station: Station) -> dict[str, tuple[str, str]]:
    """Frame name -> (images.decision, folder below the station)."""
    rows = query(station, "SELECT original_name, decision, final_path FROM images")
    return {
        str(name): (str(decision), str(Path(str(path)).parent.relative_to(station.root)))
        for name, decision, path in rows
    }


def test_rescore_apply_keeps_events_together_and_leaves_judged_frames(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frames = burst(tmp_path / "staging", 4, seed=300)
    probe = make_station(tmp_path / "station", tiny_model_dir)
    found = scores(capsys, probe.config_path, frames)
    ranked = sorted(range(4), key=lambda index: found[index], reverse=True)
    _, second, _, last = (frames[index].name for index in ranked)
    high = [found[index] for index in ranked]
    assert high[0] > high[1] > high[2], found
    station = make_station(tmp_path / "station", tiny_model_dir)
    _thresholds(station, (high[1] + high[2]) / 2)  # two positive frames, two negative
    drop(station, frames, "cam1")
    with daemon_thread(station):
        assert wait_for(lambda: idle(station, 4), SETTLE_TIMEOUT)
    [(event_id,)] = query(station, "SELECT id FROM events")
    folder = f"review/2026-12-01/cam1/event-{event_id}"
    assert {where for where in _where(station).values()} == {("positive", folder)}
    judged = str(station.root / folder / last)
    assert main(["verdict", "-c", str(station.config_path), "--not-tiger", judged]) == 0

    # The second frame is no longer positive, the top one still is: nothing moves.
    _thresholds(station, (high[0] + high[1]) / 2)
    report = _apply(station, capsys)
    assert (report["decisions_changed"], report["transitions"]) == (1, {})
    assert report["event_transitions"] == {} and report["applied"]["moved"] == 0
    assert {where for where in _where(station).values()} == {("positive", folder)}
    assert query(
        station,
        "SELECT c.decision FROM classifications c JOIN images i ON i.id = c.image_id "
        "WHERE i.original_name = ? ORDER BY c.id",
        second,
    ) == [("positive",), ("negative",)]
    assert check_invariant(station) == []

    # Now no frame is positive: the event goes to the archive, its frames with it, except the
    # judged one, which stays where staff judged it.
    _thresholds(station, (high[0] + 1.0) / 2)
    report = _apply(station, capsys)
    assert report["decisions_changed"] == 1
    assert report["transitions"] == {"review -> archive": 3}
    assert report["event_transitions"] == {"review -> archive": 1}
    assert report["applied"]["moved"] == 3
    where = _where(station)
    assert where.pop(last) == ("positive", folder)
    assert set(where.values()) == {("negative", "archive/2026-12-01/cam1")}
    assert query(station, "SELECT decision FROM events") == [("negative",)]
    reasons = query(station, "SELECT DISTINCT reason FROM refiles")
    assert reasons == [("rescore: positive -> negative",)]
    assert check_invariant(station) == []
    assert _apply(station, capsys)["applied"]["moved"] == 0  # nothing left to do
