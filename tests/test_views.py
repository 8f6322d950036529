"""model.view: centre crop, letterboxed frame, overlapping crops; the classify command agrees."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from daemon.cli import main
from daemon.decode.preprocess import to_pixels
from daemon.decode.views import MIN_OVERLAP, crop_count, crop_offsets, to_views
from tests.clip_spec import CLIP_SPEC
from tests.conftest import DEFAULT_LABELS
from tests.daemon_support import daemon_thread, make_station, query, settled, wait_until

TIGER = Path("tiger") / "anno_1440.jpg"


# --- the geometry of the crops ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [((224, 224), 1), ((4000, 3000), 2), ((1920, 1080), 2), ((2000, 1000), 3), ((900, 2000), 3)],
)
def test_crop_count_covers_the_frame_with_overlap(size: tuple[int, int], expected: int) -> None:
    long_side, short_side = max(size), min(size)

    count = crop_count(long_side, short_side)
    offsets = crop_offsets(long_side, short_side)

    assert count == expected == len(offsets)
    assert offsets[0] == 0 and offsets[-1] + short_side == long_side  # the whole long side
    for left, right in itertools.pairwise(offsets):
        assert left + short_side - right >= MIN_OVERLAP * short_side - 1


def test_center_view_is_clips_own_preprocessing() -> None:
    image = _noise((640, 480), seed=1)

    [view] = to_views(image, CLIP_SPEC, "center")

    np.testing.assert_array_equal(view, to_pixels(image, CLIP_SPEC))


def test_pad_view_letterboxes_the_whole_frame_on_a_neutral_colour() -> None:
    image = Image.new("RGB", (800, 400), (255, 255, 255))

    [view] = to_views(image, CLIP_SPEC, "pad")

    assert view.shape == (3, 224, 224)
    assert np.abs(view[:, :40, :]).max() < 0.02  # the band above the frame: about zero
    assert view[:, 112, :].min() > 1.5  # the white frame itself, across the whole width


def test_crops_views_are_the_centre_views_resize_cut_in_squares() -> None:
    image = _noise((1600, 900), seed=2)

    views = to_views(image, CLIP_SPEC, "crops")

    assert views.shape == (2, 3, 224, 224)
    resized = image.resize((398, 224), resample=3)
    left = to_pixels(resized.crop((0, 0, 224, 224)), CLIP_SPEC)
    right = to_pixels(resized.crop((174, 0, 398, 224)), CLIP_SPEC)
    np.testing.assert_array_equal(views[0], left)
    np.testing.assert_array_equal(views[1], right)


def test_an_unknown_view_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown view 'zoom'"):
        to_views(_noise((300, 200), seed=3), CLIP_SPEC, "zoom")  # type: ignore[arg-type]


# --- acceptance: a target at the frame's edge ---------------------------------------------------


def test_crops_find_a_target_at_the_edge_that_center_misses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path, samples_dir: Path
) -> None:
    frame = _edge_frame(samples_dir / TIGER, tmp_path / "edge.jpg")
    labels = [{"text": text, "target": index == 0} for index, text in enumerate(DEFAULT_LABELS)]
    probe = _classify(capsys, _config(tmp_path, tiny_model_dir, labels, "crops"), frame)
    edge, plain = probe["views"][0]["probabilities"], probe["views"][1]["probabilities"]
    # The tiny model is random: "tiger" is the label the pasted animal raises the most.
    target = max(DEFAULT_LABELS, key=lambda text: edge[text] - plain[text])
    labels = [{"text": text, "target": text == target} for text in DEFAULT_LABELS]
    center = _classify(capsys, _config(tmp_path, tiny_model_dir, labels, "center"), frame)
    assert edge[target] - max(plain[target], center["target_score"]) > 1e-4
    threshold = (edge[target] + max(plain[target], center["target_score"])) / 2
    decision = {"positive_threshold": threshold, "uncertain_threshold": threshold}

    with_crops = _classify(
        capsys, _config(tmp_path, tiny_model_dir, labels, "crops", decision), frame
    )
    with_center = _classify(
        capsys, _config(tmp_path, tiny_model_dir, labels, "center", decision), frame
    )

    assert (with_crops["decision"], with_crops["view"]) == ("positive", 0)
    assert with_center["decision"] == "negative"


# --- classify gives the daemon's result ----------------------------------------------------------


def test_classify_json_equals_the_daemons_stored_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_model_dir: Path, samples_dir: Path
) -> None:
    frame = _edge_frame(samples_dir / TIGER, tmp_path / "frame.jpg")
    labels = [{"text": text, "target": index < 2} for index, text in enumerate(DEFAULT_LABELS)]
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={"name_or_path": str(tiny_model_dir), "batch_size": 3, "threads": 1},
        labels=labels,  # type: ignore[arg-type]
    )
    expected = _classify(capsys, station.config_path, frame)
    with daemon_thread(station):
        shutil.copy(frame, station.inbox / frame.name)
        wait_until(lambda: settled(station) and bool(_stored(station)), "the frame classified")
    [(probabilities, score, decision)] = _stored(station)

    assert len(expected["views"]) == 2  # a 16:9 frame: two squares, batch_size 3 in views
    assert json.loads(str(probabilities)) == pytest.approx(expected["probabilities"], abs=1e-6)
    assert score == pytest.approx(expected["target_score"], abs=1e-6)
    assert decision == expected["decision"]


# --- helpers -------------------------------------------------------------------------------------


def _noise(size: tuple[int, int], *, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _edge_frame(sample: Path, out: Path) -> Path:
    """A 16:9 neutral frame with the sample pasted at its left edge, outside CLIP's centre crop."""
    frame = Image.new("RGB", (1600, 900), (128, 128, 128))
    with Image.open(sample) as animal:
        frame.paste(animal.convert("RGB").resize((320, 240)), (0, 330))
    frame.save(out, quality=95)
    return out


def _config(
    folder: Path,
    model: Path,
    labels: list[dict[str, Any]],
    view: str,
    decision: dict[str, float] | None = None,
) -> Path:
    data: dict[str, Any] = {
        "paths": {
            name: str(folder / name) for name in ("inbox", "review", "archive", "quarantine")
        },
        "database": {"url": f"sqlite:///{folder / 'tigerwatch.db'}"},
        "model": {"name_or_path": str(model), "view": view},
        "labels": labels,
    }
    if decision is not None:
        data["decision"] = decision
    path = folder / f"{view}-{len(list(folder.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _classify(capsys: pytest.CaptureFixture[str], config: Path, image: Path) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["classify", "-c", str(config), "--json", str(image)]) == 0
    [result] = json.loads(capsys.readouterr().out)
    return dict(result)


def _stored(station: Any) -> list[tuple[object, ...]]:
    return query(station, "SELECT probabilities, target_score, decision FROM image_latest")


def test_the_models_batches_are_counted_in_views(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.classify.classifier import ClipClassifier

    calls: list[list[int]] = []
    original = ClipClassifier.classify_pixels

    def recorded(self: ClipClassifier, pixels: Any, infrared: Any = None) -> Any:
        calls.append([int(array.shape[0]) for array in pixels])
        return original(self, pixels, infrared)

    monkeypatch.setattr(ClipClassifier, "classify_pixels", recorded)
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        model={"name_or_path": str(tiny_model_dir), "batch_size": 5, "threads": 1},
    )
    with daemon_thread(station):
        for index in range(6):
            _noise((640, 480), seed=index).save(station.inbox / f"IMG_{index}.JPG")
        wait_until(lambda: settled(station) and len(_stored(station)) == 6, "6 frames classified")

    assert sorted(views for call in calls for views in call) == [2] * 6  # 4:3: two crops each
    assert all(sum(call) <= 5 for call in calls), calls
