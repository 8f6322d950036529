"""`tigerwatch audit`: a uniform sample of unflagged frames linked for staff, and its estimate."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.staff.audit import choose_sample
from tests.daemon_support import Station, make_station
from tests.staff_support import add_frames

# Chi-square with 39 degrees of freedom: exceeded by chance with probability 0.001.
CHI2_39_P001 = 72.05


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def test_the_sample_is_uniform_and_without_replacement() -> None:
    population = list(range(40))
    counts: Counter[int] = Counter()
    for seed in range(400):
        drawn = choose_sample(population, 10, seed)
        assert len(set(drawn)) == 10
        counts.update(drawn)
    expected = 400 * 10 / 40
    chi2 = sum((counts[member] - expected) ** 2 / expected for member in population)
    assert chi2 < CHI2_39_P001
    # The test can fail: a sampler favouring low ids is caught.
    rng = random.Random(0)
    biased: Counter[int] = Counter()
    for _ in range(400):
        biased.update(rng.sample(population[:30], 10))
    assert sum((biased[m] - expected) ** 2 / expected for m in population) > CHI2_39_P001


def test_audit_links_sampled_archive_and_uncertain_frames_with_their_weight(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, [0.9] * 10 + [0.3] * 5 + [0.1] * 15)
    args = ["audit", "-c", str(station.config_path), "--sample", "5", "--seed", "1"]
    assert main(args) == 0
    assert "linked 5 of 20 archived and uncertain frames" in capsys.readouterr().out
    with sqlite3.connect(station.db_path) as connection:
        rows = connection.execute(
            "SELECT a.image_id, a.weight, a.population, a.link_path, i.final_path, i.decision "
            "FROM audit_samples AS a JOIN images AS i ON i.id = a.image_id"
        ).fetchall()
    folder = station.root / "review" / "audit" / date.today().isoformat()
    assert sorted(entry.name for entry in folder.iterdir()) == sorted(
        Path(row[3]).name for row in rows
    )
    for _image_id, weight, population, link, final_path, decision in rows:
        assert (weight, population) == (4.0, 20)
        assert decision in ("negative", "uncertain")
        assert Path(link).stat().st_ino == Path(final_path).stat().st_ino  # a hard link
    assert all(path.exists() for path in paths)  # nothing moved away from its destination


def test_the_audit_estimate_covers_the_true_number_of_missed_tigers(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    add_frames(station, [0.1] * 200)
    truth = set(random.Random(3).sample(range(1, 201), 20))  # image ids really showing a tiger
    config = str(station.config_path)
    assert main(["audit", "-c", config, "--sample", "60", "--seed", "7"]) == 0
    with sqlite3.connect(station.db_path) as connection:
        sampled = connection.execute("SELECT image_id, link_path FROM audit_samples").fetchall()
    for wanted in (True, False):
        links = [link for image_id, link in sampled if (image_id in truth) is wanted]
        flag = "--tiger" if wanted else "--not-tiger"
        assert main(["verdict", "-c", config, flag, *links]) == 0  # found by content
    with sqlite3.connect(station.db_path) as connection:
        sources = connection.execute("SELECT DISTINCT source FROM verdicts").fetchall()
    assert sources == [("audit",)]
    capsys.readouterr()
    assert main(["evaluate", "-c", config, "--json"]) == 0
    archive = json.loads(capsys.readouterr().out)["archive"]
    found = sum(image_id in truth for image_id, _ in sampled)
    assert archive["tigers_found"] == found and archive["judged"] == 60
    assert archive["estimate"] == pytest.approx(200 * found / 60)
    assert archive["low"] <= 20 <= archive["high"]
