"""End-to-end tests of the `tigerwatch` command line, run through daemon.cli.main."""

from __future__ import annotations

import grp
import importlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from daemon.cli import main
from daemon.storage.database import head_revision

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "config.example.yaml"
COMMANDS = (
    "check-config",
    "classify",
    "compare-precision",
    "db",
    "run",
    "status",
    "download-model",
)
POSITIVE_THRESHOLD = 0.5  # the defaults; write_config leaves the decision section out
UNCERTAIN_THRESHOLD = 0.2
SAMPLE_FILES = ("tiger/anno_1440.jpg", "other_animal/nacti.jpg", "empty/blank.jpg")

LABEL_LINE = re.compile(r"^  (?P<label>\S.*?) +(?P<probability>\d\.\d{3})$")
TARGET_LINE = re.compile(r"^  target score (?P<score>\d\.\d{3}): (?P<decision>\w+)$")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class TextResult:
    path: str
    probabilities: list[tuple[str, float]]  # in printed order
    target_score: float
    decision: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return Run(code=code, out=captured.out, err=captured.err)


def write_config(
    folder: Path,
    model: Path,
    labels: list[str],
    targets: list[bool],
    *,
    decision: dict[str, float] | None = None,
    name: str = "tigerwatch.yaml",
) -> Path:
    data: dict[str, Any] = {
        "paths": {
            "inbox": str(folder / "inbox"),
            "review": str(folder / "review"),
            "archive": str(folder / "archive"),
            "quarantine": str(folder / "quarantine"),
        },
        "database": {"url": f"sqlite:///{folder / 'data' / 'tigerwatch.db'}"},
        # batch_size 2: three images need two model runs, so batching is exercised too
        # fp32, not the default auto: results compared with an fp32 classifier must not
        # depend on whether this CPU has native bf16.
        "model": {"name_or_path": str(model), "batch_size": 2, "precision": "fp32"},
        "labels": [
            {"text": text, "target": target} for text, target in zip(labels, targets, strict=True)
        ],
    }
    if decision is not None:
        data["decision"] = decision
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def config_file(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> Path:
    return write_config(tmp_path, tiny_model_dir, default_labels, default_targets)


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tigerwatch.db"


def make_jpeg(path: Path, seed: int, size: tuple[int, int] = (96, 72)) -> Path:
    """A noisy picture with a coloured block: different seeds give different CLIP scores."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    block = tuple(rng.randrange(256) for _ in range(3))
    image.paste(block, (size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4))
    image.save(path, format="JPEG", quality=90)
    return path


@pytest.fixture
def good_images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    return [make_jpeg(folder / f"frame_{seed}.jpg", seed) for seed in (1, 2, 3)]


@pytest.fixture
def random_bytes_image(tmp_path: Path) -> Path:
    path = tmp_path / "images" / "noise.jpg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(random.Random(7).randbytes(4096))
    return path


@pytest.fixture
def truncated_image(tmp_path: Path) -> Path:
    buffer = BytesIO()
    Image.effect_noise((320, 240), 64).convert("RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    path = tmp_path / "images" / "cut_off.jpg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def expected_decision(score: float) -> str:
    if score >= POSITIVE_THRESHOLD:
        return "positive"
    if score >= UNCERTAIN_THRESHOLD:
        return "uncertain"
    return "negative"


VIEWS_LINE = re.compile(r"^  (day|infrared) prompts; views' target scores \(\* chosen\): .*\*")
FRAME_LINE = re.compile(
    r"^  frame: (colour|infrared \(grey\)); info strips cut: (none|top \d+ px, bottom \d+ px)$"
)


def parse_text(out: str) -> list[TextResult]:
    """Split `classify` text output into one result per image; fails on any unexpected line."""
    blocks: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("  "):
            blocks[-1].append(line)
        else:
            blocks.append([line])
    return [_parse_block(block) for block in blocks]


def _parse_block(block: list[str]) -> TextResult:
    path, *label_lines, target_line, views_line, frame_line = block
    assert VIEWS_LINE.match(views_line), f"not a views line: {views_line!r}"
    assert FRAME_LINE.match(frame_line), f"not a frame line: {frame_line!r}"
    probabilities = []
    for line in label_lines:
        match = LABEL_LINE.match(line)
        assert match is not None, f"not a label line: {line!r}"
        probabilities.append((match["label"], float(match["probability"])))
    target = TARGET_LINE.match(target_line)
    assert target is not None, f"not a target score line: {target_line!r}"
    return TextResult(path, probabilities, float(target["score"]), target["decision"])


def check_text_result(
    result: TextResult, labels: list[str], targets: list[bool], *, expected_path: Path
) -> None:
    assert result.path == str(expected_path)
    printed_labels = [label for label, _ in result.probabilities]
    assert sorted(printed_labels) == sorted(labels)  # each label exactly once
    values = [probability for _, probability in result.probabilities]
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0, abs=0.0005 * len(values) + 1e-9)
    target_labels = {label for label, target in zip(labels, targets, strict=True) if target}
    rounded_target_sum = sum(p for label, p in result.probabilities if label in target_labels)
    # Three roundings to 3 decimals; the difference is a whole number of thousandths.
    assert abs(result.target_score - rounded_target_sum) <= 0.001 + 1e-9
    # The printed score is rounded: near a threshold either neighbouring decision is right.
    candidates = {expected_decision(result.target_score + delta) for delta in (-5e-4, 0, 5e-4)}
    assert result.decision in candidates


def assert_valid_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 0 and image.height > 0
        image.load()  # decodes every pixel: a truncated file raises here


# --- help and the entry point ---------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\b", out, re.MULTILINE), command


def test_db_help_lists_upgrade(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["db", "--help"])
    assert exited.value.code == 0
    assert re.search(r"^\s+upgrade\b", capsys.readouterr().out, re.MULTILINE)


def test_python_dash_m_daemon_is_the_cli(config_file: Path) -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "daemon", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr
    for command in COMMANDS:
        assert command in help_run.stdout
    check_run = subprocess.run(
        [sys.executable, "-m", "daemon", "check-config", "-c", str(config_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (check_run.returncode, check_run.stdout.strip()) == (0, "ok"), check_run.stderr


# --- check-config ----------------------------------------------------------------------------


def test_check_config_accepts_a_good_config(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    run = run_cli(capsys, "check-config", "-c", config_file)
    assert (run.code, run.out.strip(), run.err) == (0, "ok", "")


def test_check_config_accepts_the_example_config(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "check-config", "-c", EXAMPLE)
    assert (run.code, run.out.strip(), run.err) == (0, "ok", "")


def test_check_config_warns_about_bf16_on_a_cpu_without_it(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from daemon.classify import cpu_caps

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu sse2 avx avx2 fma\n")  # an AVX2-only CPU, as on Zen 3
    monkeypatch.setattr(cpu_caps, "CPUINFO", cpuinfo)
    data = yaml.safe_load(config_file.read_text())
    data.setdefault("model", {})["precision"] = "bf16"
    config_file.write_text(yaml.safe_dump(data))

    run = run_cli(capsys, "check-config", "-c", config_file)

    assert (run.code, run.out.strip()) == (0, "ok")
    assert f"warning: {config_file}: model.precision bf16" in run.err
    assert "6x slower than fp32" in run.err


def test_check_config_lists_every_mistake_with_file_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "station.yaml"
    data = {
        "paths": {
            "inbox": "inbox",
            "review": "review",
            "archive": "archive",
            "quarantine": "quarantine",
            "colour": "blue",
        },
        "model": {"batch_size": 0},
        "decision": {"positive_threshold": 2},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    run = run_cli(capsys, "check-config", "-c", path)

    assert run.code == 2
    assert run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == 3, run.err
    for key in ("paths.colour", "model.batch_size", "decision.positive_threshold"):
        matching = [line for line in lines if key in line]
        assert len(matching) == 1, f"{key} not reported once in {lines}"
        assert "station.yaml" in matching[0]


# --- classify: text --------------------------------------------------------------------------


def test_classify_prints_every_label_sorted_with_score_and_decision(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    good_images: list[Path],
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    run = run_cli(capsys, "classify", "-c", config_file, *good_images)

    assert run.code == 0, run.err
    results = parse_text(run.out)
    assert len(results) == len(good_images)
    for result, image in zip(results, good_images, strict=True):
        check_text_result(result, default_labels, default_targets, expected_path=image)
    assert "Traceback" not in run.err


def test_classify_real_samples(
    capsys: pytest.CaptureFixture[str],
    samples_dir: Path,
    config_file: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    images = [samples_dir / name for name in SAMPLE_FILES]
    missing = [str(image) for image in images if not image.is_file()]
    if missing:
        pytest.skip(f"sample photos missing: {', '.join(missing)}")

    run = run_cli(capsys, "classify", "-c", config_file, *images)

    assert run.code == 0, run.err
    results = parse_text(run.out)
    assert len(results) == len(images)
    for result, image in zip(results, images, strict=True):
        check_text_result(result, default_labels, default_targets, expected_path=image)


def test_classify_text_reports_bad_images_on_stderr_and_goes_on(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    good_images: list[Path],
    random_bytes_image: Path,
    truncated_image: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    first, second, third = good_images
    run = run_cli(
        capsys, "classify", "-c", config_file, first, random_bytes_image, second, truncated_image
    )

    assert run.code == 1
    results = parse_text(run.out)
    assert [result.path for result in results] == [str(first), str(second)]
    for result, image in zip(results, (first, second), strict=True):
        check_text_result(result, default_labels, default_targets, expected_path=image)
    error_lines = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 2, run.err
    assert str(random_bytes_image) in error_lines[0]
    assert str(truncated_image) in error_lines[1]
    assert str(third) not in run.err
    assert "Traceback" not in run.err


# --- classify: JSON --------------------------------------------------------------------------


def classify_json(
    capsys: pytest.CaptureFixture[str], config: Path, *images: Path
) -> tuple[int, list[dict[str, Any]]]:
    run = run_cli(capsys, "classify", "-c", config, "--json", *images)
    assert "Traceback" not in run.err
    parsed = json.loads(run.out)
    assert isinstance(parsed, list)
    return run.code, parsed


def test_classify_json_has_exact_keys_and_consistent_scores(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    good_images: list[Path],
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    code, results = classify_json(capsys, config_file, *good_images)

    assert code == 0
    assert [result["path"] for result in results] == [str(image) for image in good_images]
    target_labels = [label for label, t in zip(default_labels, default_targets, strict=True) if t]
    for result in results:
        assert set(result) == {
            "path",
            "probabilities",
            "target_score",
            "decision",
            "infrared",
            "strip_top",
            "strip_bottom",
            "view",
            "views",
        }
        # The frame's probabilities are those of its view with the highest tiger score.
        view_scores = [view["target_score"] for view in result["views"]]
        assert result["target_score"] == max(view_scores)
        assert result["probabilities"] == result["views"][result["view"]]["probabilities"]
        assert result["infrared"] is False
        probabilities = result["probabilities"]
        assert set(probabilities) == set(default_labels)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        target_sum = sum(probabilities[label] for label in target_labels)
        assert result["target_score"] == pytest.approx(target_sum, abs=1e-6)
        assert result["decision"] == expected_decision(result["target_score"])


def test_classify_json_marks_failed_images_and_keeps_the_rest(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    good_images: list[Path],
    random_bytes_image: Path,
    truncated_image: Path,
) -> None:
    first, second, third = good_images
    order = [first, random_bytes_image, second, truncated_image, third]

    code, results = classify_json(capsys, config_file, *order)

    assert code == 1
    assert [result["path"] for result in results] == [str(image) for image in order]
    for result in (results[1], results[3]):
        assert set(result) == {"path", "error"}
        assert isinstance(result["error"], str) and result["error"]
    for result in (results[0], results[2], results[4]):
        assert {"probabilities", "target_score", "decision", "views"} <= set(result)


def test_decision_follows_the_configured_thresholds(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Path,
    good_images: list[Path],
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    image = good_images[0]
    baseline = write_config(tmp_path, tiny_model_dir, default_labels, default_targets)
    _, [result] = classify_json(capsys, baseline, image)
    score = result["target_score"]
    assert 0.002 < score < 0.998  # room for thresholds on both sides
    cases = {
        "positive": {"positive_threshold": score - 0.001, "uncertain_threshold": score - 0.001},
        "uncertain": {"positive_threshold": score + 0.001, "uncertain_threshold": score - 0.001},
        "negative": {"positive_threshold": score + 0.002, "uncertain_threshold": score + 0.001},
    }
    for expected, thresholds in cases.items():
        config = write_config(
            tmp_path,
            tiny_model_dir,
            default_labels,
            default_targets,
            decision=thresholds,
            name=f"{expected}.yaml",
        )
        _, [result] = classify_json(capsys, config, image)
        assert result["decision"] == expected, thresholds


# --- classify --plot -------------------------------------------------------------------------


def test_plot_folder_gets_one_png_per_classified_image(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    config_file: Path,
    good_images: list[Path],
    random_bytes_image: Path,
) -> None:
    out = tmp_path / "charts"
    run = run_cli(capsys, "classify", "-c", config_file, "--plot", out, *good_images)
    assert run.code == 0, run.err
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"{image.name}.png" for image in good_images
    )
    for chart in out.iterdir():
        assert_valid_png(chart)


def test_plot_folder_skips_failed_images(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    config_file: Path,
    good_images: list[Path],
    random_bytes_image: Path,
) -> None:
    out = tmp_path / "charts"
    run = run_cli(
        capsys, "classify", "-c", config_file, "--plot", out, good_images[0], random_bytes_image
    )
    assert run.code == 1
    assert [path.name for path in out.iterdir()] == [f"{good_images[0].name}.png"]
    assert_valid_png(out / f"{good_images[0].name}.png")


def test_plot_to_a_png_file_for_one_image(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config_file: Path, good_images: list[Path]
) -> None:
    chart = tmp_path / "charts" / "frame.png"
    run = run_cli(capsys, "classify", "-c", config_file, "--plot", chart, good_images[0])
    assert run.code == 0, run.err
    assert_valid_png(chart)
    assert list(chart.parent.iterdir()) == [chart]


def test_plot_to_a_png_file_refuses_two_images(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, config_file: Path, good_images: list[Path]
) -> None:
    chart = tmp_path / "frame.png"
    run = run_cli(capsys, "classify", "-c", config_file, "--plot", chart, *good_images[:2])
    assert run.code == 2
    assert run.out == ""
    assert "frame.png" in run.err and "folder" in run.err
    assert not chart.exists()


# --- classify without a model ----------------------------------------------------------------


def test_missing_model_exits_3_with_a_download_hint(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    good_images: list[Path],
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    model = tmp_path / "no-such-model"
    config = write_config(tmp_path, model, default_labels, default_targets)

    run = run_cli(capsys, "classify", "-c", config, *good_images)

    assert run.code == 3
    assert run.out == ""
    assert str(model) in run.err
    assert "download-model" in run.err
    assert "Traceback" not in run.err


# --- db upgrade and status -------------------------------------------------------------------


def test_db_upgrade_creates_the_schema(
    capsys: pytest.CaptureFixture[str], config_file: Path, database_file: Path
) -> None:
    run = run_cli(capsys, "db", "upgrade", "-c", config_file)
    assert run.code == 0, run.err
    assert database_file.is_file()
    with sqlite3.connect(database_file) as connection:
        objects = dict(connection.execute("SELECT name, type FROM sqlite_master").fetchall())
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    for table in ("images", "classifications", "duplicates", "rejects"):
        assert objects.get(table) == "table", table
    assert objects.get("image_latest") == "view"
    assert revision == head_revision()


def test_db_upgrade_twice_is_harmless(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    assert run_cli(capsys, "db", "upgrade", "-c", config_file).code == 0
    again = run_cli(capsys, "db", "upgrade", "-c", config_file)
    assert again.code == 0, again.err


def test_status_of_a_fresh_database_is_all_zero(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    assert run_cli(capsys, "db", "upgrade", "-c", config_file).code == 0

    run = run_cli(capsys, "status", "-c", config_file)

    assert run.code == 0, run.err
    images_line = next(line for line in run.out.splitlines() if line.startswith("images:"))
    counts = re.findall(r"\d+", images_line)
    assert counts and set(counts) == {"0"}
    assert re.search(r"^queue depth:\s+0$", run.out, re.MULTILINE)


def test_status_json_of_a_fresh_database(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    assert run_cli(capsys, "db", "upgrade", "-c", config_file).code == 0

    run = run_cli(capsys, "status", "-c", config_file, "--json")

    assert run.code == 0, run.err
    report = json.loads(run.out)
    required = {
        "images_by_state",
        "queue_depth",
        "oldest_waiting_seconds",
        "last_processed_at",
        "today",
    }
    assert required <= set(report)
    assert report["images_by_state"] and set(report["images_by_state"].values()) == {0}
    assert report["queue_depth"] == 0
    assert report["oldest_waiting_seconds"] is None
    assert report["last_processed_at"] is None
    assert all(count == 0 for count in report["today"].values())


def test_status_without_a_database_says_to_upgrade(
    capsys: pytest.CaptureFixture[str], config_file: Path, database_file: Path
) -> None:
    run = run_cli(capsys, "status", "-c", config_file)

    assert run.code == 4
    assert run.out == ""
    assert run.err.startswith("error:")
    assert str(database_file) in run.err
    assert f"tigerwatch db upgrade -c {config_file}" in run.err
    assert "Traceback" not in run.err
    assert not database_file.exists()
    assert not database_file.parent.exists()


def test_status_of_an_empty_database_file_says_to_upgrade(
    capsys: pytest.CaptureFixture[str], config_file: Path, database_file: Path
) -> None:
    database_file.parent.mkdir()
    database_file.touch()

    run = run_cli(capsys, "status", "-c", config_file, "--json")

    assert run.code == 4
    assert run.out == ""
    assert "db upgrade" in run.err
    assert "Traceback" not in run.err


def test_classify_decodes_as_the_daemon_does(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    # A frame large enough for libjpeg's draft scaling: the daemon decodes it at reduced scale,
    # and `classify` must give the very same probabilities, not those of a full decode.
    from daemon.classify.classifier import ClipClassifier
    from daemon.decode.jobs import DecodeJob, decode_job
    from daemon.hashing import sha256_file

    frame = make_jpeg(tmp_path / "large.jpg", seed=7, size=(1600, 1200))
    _, [result] = classify_json(capsys, config_file, frame)
    classifier = ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets)
    job = DecodeJob(
        path=str(frame),
        sha256=sha256_file(frame),
        formats=("JPEG",),
        max_pixels=100_000_000,
        draft_size=classifier.input_size,
        spec=classifier.preprocess_spec,
        view="crops",  # model.view's default, which the config file leaves as it is
    )
    outcome = decode_job(job)
    assert outcome.pixels is not None
    [daemon_result] = classifier.classify_pixels([outcome.pixels])
    assert result["target_score"] == pytest.approx(daemon_result.target_score, abs=1e-6)
    assert len(result["views"]) == outcome.pixels.shape[0] == 2  # a 4:3 frame: two squares
    full = classifier.classify([Image.open(frame).convert("RGB")])[0]
    # The check can fail: a full decode of this frame really scores differently.
    assert abs(full.target_score - daemon_result.target_score) > 1e-6


def test_run_on_a_file_that_is_no_database_is_one_line_and_exit_4(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    config = write_config(tmp_path, tiny_model_dir, default_labels, default_targets)
    database = tmp_path / "data" / "tigerwatch.db"
    database.parent.mkdir()
    database.write_bytes(b"these are not the bytes of a SQLite database" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(database) in line
    assert "file is not a database" in line


# --- files.group / files.mode that cannot be applied: a start-up error -----------------------


def _unused_gid() -> int:
    gid = 54321
    while True:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
        gid += 1


def test_a_group_id_that_names_no_group_is_a_config_error(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    gid = _unused_gid()
    data = yaml.safe_load(config_file.read_text())
    data["files"] = {"group": gid, "mode": "0640"}
    config_file.write_text(yaml.safe_dump(data))
    result = run_cli(capsys, "check-config", "-c", config_file)
    print(f"\n[files] check-config with files.group {gid}: exit {result.code}: {result.err}")
    assert result.code == 2
    assert f"{config_file}: files.group: no group with id {gid} on this machine" in result.err


def _run_as_non_member(config: Path, stderr: Path, user: tuple[int, int] | None) -> int:
    """`tigerwatch run` in a forked child, as `user` (uid, gid) when given; its exit code.

    The child is forked after the imports: as nobody it could not read root's interpreter.
    """
    for module in ("daemon.service", "daemon.delivery.permissions", "daemon.storage.database"):
        importlib.import_module(module)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            fd = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            os.dup2(fd, 2)
            sys.stderr = os.fdopen(fd, "w", buffering=1)  # pytest's capture is not fd 2
            if user is not None:
                os.setgroups([])
                os.setgid(user[1])
                os.setuid(user[0])
            code = main(["run", "-c", str(config)])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"`tigerwatch run` still running after 120 s: {stderr.read_text()}")


def test_a_group_the_daemon_user_is_not_in_stops_the_start(tiny_model_dir: Path) -> None:
    """As root the daemon runs as nobody (root may chgrp to anything); else as this user."""
    user = (65534, 65534) if os.geteuid() == 0 else None
    groups = [] if user is not None else [os.getegid(), *os.getgroups()]
    if 0 in groups:
        pytest.skip("this user is in group 0: no group to be refused")
    station = Path(tempfile.mkdtemp(prefix="tw-files-", dir="/tmp"))
    try:
        station.chmod(0o755)
        if user is not None:
            os.chown(station, *user)
        config = write_config(station, tiny_model_dir, ["a tiger", "a deer"], [True, False])
        data = yaml.safe_load(config.read_text())
        data["files"] = {"group": 0, "mode": "0640"}
        config.write_text(yaml.safe_dump(data))
        stderr = station / "stderr.txt"
        code = _run_as_non_member(config, stderr, user)
        text = stderr.read_text()
        database_made = (station / "data" / "tigerwatch.db").exists()
        leftovers = [p.name for p in (station / "review").glob(".tigerwatch-probe-*")]
    finally:
        shutil.rmtree(station, ignore_errors=True)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    print(f"\n[files] run as {user or 'this user'} with files.group 0: exit {code}: {errors}")
    assert code == 2, text
    assert "Traceback" not in text
    assert len(errors) == 1, text
    assert f"{config}: files.group: " in errors[0] and "gid 0" in errors[0], errors
    assert "not a member" in errors[0], errors
    assert not database_made  # refused before anything else was touched
    assert leftovers == []
