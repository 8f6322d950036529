"""Prompt sets (CLIP prompt ensembling), infrared prompts and per-light thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from daemon.classify.classifier import ClipClassifier
from daemon.config import Decision, Label
from daemon.outcomes import decide

EXACT = 1e-5
LABELS = (
    Label(
        name="tiger",
        target=True,
        prompts=("a camera trap photo of an Amur tiger", "a photo of a tiger in the snow"),
        infrared_prompts=("a black and white infrared camera trap photo of a tiger at night",),
    ),
    Label(
        name="deer",
        prompts=("a camera trap photo of a deer", "a photo of a roe deer", "a deer in a forest"),
        infrared_prompts=("an infrared photo of a deer at night", "a grey night photo of a deer"),
    ),
    Label(name="empty", prompts=("a camera trap photo of an empty forest",)),
)


@pytest.fixture(scope="module")
def classifier(tiny_model_dir: Path) -> ClipClassifier:
    return ClipClassifier.load(str(tiny_model_dir), LABELS, [label.target for label in LABELS])


@pytest.fixture(scope="module")
def text_tower(tiny_model_dir: Path) -> tuple[CLIPModel, CLIPProcessor]:
    model = CLIPModel.from_pretrained(str(tiny_model_dir))
    return model, CLIPProcessor.from_pretrained(str(tiny_model_dir), backend="pil")


def hand_ensembled(tower: tuple[CLIPModel, CLIPProcessor], *, infrared: bool) -> torch.Tensor:
    """Per label: each prompt's embedding L2-normalised, averaged, the mean normalised again."""
    model, processor = tower
    rows = []
    for label in LABELS:
        texts = label.infrared_prompts if infrared and label.infrared_prompts else label.prompts
        tokens = processor.tokenizer(list(texts), padding=True, return_tensors="pt")
        with torch.inference_mode():
            features = model.get_text_features(**tokens).pooler_output
        unit = features / features.norm(dim=-1, keepdim=True)
        mean = unit.mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows)


def hand_probabilities(
    tower: tuple[CLIPModel, CLIPProcessor], image_embedding: np.ndarray, *, infrared: bool
) -> np.ndarray:
    model, _ = tower
    logits = (
        model.logit_scale.exp()
        * torch.tensor(image_embedding)
        @ hand_ensembled(tower, infrared=infrared).T
    )
    return logits.softmax(-1).detach().numpy()


def frame(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("infrared", [False, True])
def test_each_label_is_the_renormalised_mean_of_its_prompts(
    classifier: ClipClassifier, text_tower: tuple[CLIPModel, CLIPProcessor], infrared: bool
) -> None:
    [result] = classifier.classify([frame(1)], infrared=[infrared])

    expected = hand_probabilities(text_tower, result.embedding, infrared=infrared)

    assert result.infrared is infrared
    np.testing.assert_allclose(list(result.probabilities.values()), expected, atol=EXACT, rtol=0)
    assert result.target_score == pytest.approx(float(expected[0]), abs=EXACT)


def test_infrared_prompts_change_the_result_and_day_is_the_default(
    classifier: ClipClassifier,
) -> None:
    day, night = classifier.classify([frame(2), frame(2)], infrared=[False, True])
    [unsaid] = classifier.classify([frame(2)])

    assert unsaid.probabilities == pytest.approx(day.probabilities, abs=EXACT)
    assert not unsaid.infrared
    np.testing.assert_array_equal(day.embedding, night.embedding)  # one image, two prompt sets
    assert abs(day.target_score - night.target_score) > 1e-6


def test_a_label_without_infrared_prompts_uses_its_day_prompts_at_night() -> None:
    assert LABELS[2].prompts_for(infrared=True) == LABELS[2].prompts
    assert LABELS[0].prompts_for(infrared=True) == LABELS[0].infrared_prompts


def test_infrared_thresholds_decide_infrared_frames_and_default_to_the_day_ones() -> None:
    decision = Decision.model_validate(
        {
            "positive_threshold": 0.6,
            "uncertain_threshold": 0.3,
            "infrared": {"positive_threshold": 0.4},
        }
    )

    assert decision.thresholds(infrared=False) == (0.6, 0.3)
    assert decision.thresholds(infrared=True) == (0.4, 0.3)
    positive, uncertain = decision.thresholds(infrared=True)
    assert decide(0.5, positive_threshold=positive, uncertain_threshold=uncertain) == "positive"
    positive, uncertain = decision.thresholds(infrared=False)
    assert decide(0.5, positive_threshold=positive, uncertain_threshold=uncertain) == "uncertain"


def test_classify_decides_an_infrared_frame_with_the_infrared_prompts_and_thresholds(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import yaml

    from daemon.classify import oneshot
    from daemon.cli import main

    # The infrared detector is another module's work: here the decode step's flag is set by hand.
    real_decode = oneshot.decode_bytes
    monkeypatch.setattr(
        oneshot, "decode_bytes", lambda data, job: real_decode(data, job) | {"infrared": True}
    )
    image = tmp_path / "night.jpg"
    frame(3).save(image)
    decision = {
        "positive_threshold": 1.0,
        "uncertain_threshold": 1.0,
        "infrared": {"positive_threshold": 1e-9, "uncertain_threshold": 0.0},
    }
    config = tmp_path / "tigerwatch.yaml"
    data = {
        "paths": {
            name: str(tmp_path / name) for name in ("inbox", "review", "archive", "quarantine")
        },
        "model": {"name_or_path": str(tiny_model_dir), "view": "center"},
        "labels": [label.model_dump() for label in LABELS],
        "decision": decision,
    }
    config.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert main(["classify", "-c", str(config), "--json", str(image)]) == 0
    [result] = json.loads(capsys.readouterr().out)

    assert (result["infrared"], result["decision"]) == (True, "positive")
    classifier = ClipClassifier.load(str(tiny_model_dir), LABELS, [True, False, False])
    [night] = classifier.classify([Image.open(image)], infrared=[True])
    assert result["target_score"] == pytest.approx(night.target_score, abs=EXACT)
