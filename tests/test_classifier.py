"""Tests for daemon.classify.classifier against a real (tiny, random) CLIP saved to disk."""

from __future__ import annotations

import hashlib
import math
import shutil
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import CLIPModel, CLIPProcessor
from transformers.activations import QuickGELUActivation

from daemon.classify.classifier import Classification, ClipClassifier
from daemon.classify.loading import ModelLoadError, download_model
from daemon.classify.precision import InPlaceQuickGELU
from scripts.make_test_model import build_test_model

EXACT = 1e-5
LOOSE = 0.05
VIT_B32_PARAMETERS = 151_277_313
SAMPLE_PHOTO = Path("tiger") / "anno_1440.jpg"


def synthetic_images() -> list[Image.Image]:
    """Different sizes, aspect ratios and modes, with content that differs between images."""
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 640, dtype=np.float32)
    gradient = np.stack(
        [np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 90)], -1
    )
    checker = ((np.indices((800, 300)).sum(0) // 25) % 2 * 255).astype(np.uint8)
    return [
        Image.fromarray(gradient.astype(np.uint8), "RGB"),
        Image.fromarray(checker, "L"),
        Image.fromarray(rng.integers(0, 256, (40, 1000, 3), dtype=np.uint8), "RGB"),
        Image.new("RGB", (224, 224), (200, 120, 30)),
        Image.fromarray(rng.integers(0, 256, (17, 23, 4), dtype=np.uint8), "RGBA"),
    ]


def probabilities(result: Classification) -> np.ndarray:
    return np.array(list(result.probabilities.values()))


@pytest.fixture(scope="module")
def classifier(
    tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> ClipClassifier:
    return ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[CLIPModel, CLIPProcessor]:
    """The untouched transformers model and processor, as the original notebook used them."""
    model = CLIPModel.from_pretrained(str(tiny_model_dir))
    return model, CLIPProcessor.from_pretrained(str(tiny_model_dir), backend="pil")


def reference_probabilities(
    reference: tuple[CLIPModel, CLIPProcessor], labels: Sequence[str], image: Image.Image
) -> np.ndarray:
    model, processor = reference
    inputs = processor(text=list(labels), images=image, return_tensors="pt", padding=True)
    with torch.inference_mode():
        row: np.ndarray = model(**inputs).logits_per_image.softmax(-1)[0].numpy()
    return row


def assert_matches_clip(
    result: Classification,
    expected: np.ndarray,
    labels: Sequence[str],
    targets: Sequence[bool],
) -> None:
    assert list(result.probabilities) == list(labels)
    np.testing.assert_allclose(probabilities(result), expected, atol=EXACT, rtol=0)
    assert result.target_score == pytest.approx(expected[list(targets)].sum(), abs=EXACT)
    assert result.embedding.dtype == np.float32
    assert result.embedding.ndim == 1
    assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=EXACT)


@pytest.mark.parametrize("index", range(len(synthetic_images())))
def test_probabilities_equal_clip_logits_softmax(
    classifier: ClipClassifier,
    reference: tuple[CLIPModel, CLIPProcessor],
    default_labels: list[str],
    default_targets: list[bool],
    index: int,
) -> None:
    image = synthetic_images()[index]
    expected = reference_probabilities(reference, default_labels, image)
    # A near-uniform reference would make the comparison toothless.
    assert expected.max() - expected.min() > 0.1

    [result] = classifier.classify([image])

    assert_matches_clip(result, expected, default_labels, default_targets)


def test_probabilities_equal_clip_on_a_sample_photo(
    classifier: ClipClassifier,
    reference: tuple[CLIPModel, CLIPProcessor],
    default_labels: list[str],
    default_targets: list[bool],
    samples_dir: Path,
) -> None:
    with Image.open(samples_dir / SAMPLE_PHOTO) as photo:
        image = photo.convert("RGB")

    [result] = classifier.classify([image])

    expected = reference_probabilities(reference, default_labels, image)
    assert_matches_clip(result, expected, default_labels, default_targets)


def test_batch_results_equal_single_image_results(classifier: ClipClassifier) -> None:
    images = synthetic_images()

    batch = classifier.classify(images)
    singles = [classifier.classify([image])[0] for image in images]

    assert len(batch) == len(images)
    for together, alone in zip(batch, singles, strict=True):
        np.testing.assert_allclose(probabilities(together), probabilities(alone), atol=EXACT)
        np.testing.assert_allclose(together.embedding, alone.embedding, atol=EXACT)
        assert together.target_score == pytest.approx(alone.target_score, abs=EXACT)


def test_classify_tensors_takes_what_preprocess_gives(classifier: ClipClassifier) -> None:
    images = synthetic_images()[:3]
    size = classifier.input_size

    # The classifier's view is `center` unless told: one (1, 3, S, S) view per image.
    pixels = torch.cat([classifier.preprocess(image) for image in images])

    assert pixels.shape == (3, 3, size, size)
    assert pixels.dtype == torch.float32
    from_tensors = classifier.classify_tensors(pixels)
    from_images = classifier.classify(images)
    for a, b in zip(from_tensors, from_images, strict=True):
        np.testing.assert_array_equal(a.embedding, b.embedding)


def test_classify_pixels_takes_the_decoders_uint8_levels(classifier: ClipClassifier) -> None:
    from daemon.decode.views import to_view_levels, to_views

    images = synthetic_images()[:3]
    levels = [to_view_levels(image, classifier.preprocess_spec, "crops") for image in images]

    side = classifier.input_size
    assert all(item.dtype == np.uint8 and item.shape[1:] == (side, side, 3) for item in levels)
    from_levels = classifier.classify_pixels(levels)
    from_floats = classifier.classify_views(
        [torch.from_numpy(to_views(image, classifier.preprocess_spec, "crops")) for image in images]
    )
    for a, b in zip(from_levels, from_floats, strict=True):
        np.testing.assert_array_equal(a.embedding, b.embedding)
        assert a.probabilities == b.probabilities and a.view == b.view


def test_preprocess_is_the_same_from_many_threads(classifier: ClipClassifier) -> None:
    images = synthetic_images() * 4
    serial = [classifier.preprocess(image) for image in images]

    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(classifier.preprocess, images))

    for a, b in zip(serial, threaded, strict=True):
        assert torch.equal(a, b)


def test_empty_batches_give_empty_results(classifier: ClipClassifier) -> None:
    size = classifier.input_size
    assert classifier.classify([]) == []
    assert classifier.classify_tensors(torch.zeros(0, 3, size, size)) == []


def test_wrong_tensor_shape_is_refused(classifier: ClipClassifier) -> None:
    with pytest.raises(ValueError, match="expected pixel values"):
        classifier.classify_tensors(torch.zeros(3, classifier.input_size, classifier.input_size))


def test_text_tower_is_dropped_after_load(classifier: ClipClassifier) -> None:
    model = classifier._model

    assert not hasattr(model, "text_model")
    assert not hasattr(model, "text_projection")
    kept = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert kept <= {"vision_model", "visual_projection", "logit_scale"}


def test_every_activation_is_the_in_place_quick_gelu(classifier: ClipClassifier) -> None:
    activations = [
        module.activation_fn
        for module in classifier._model.modules()
        if hasattr(module, "activation_fn")
    ]
    assert activations, "the vision tower has MLP activations"
    assert all(isinstance(activation, InPlaceQuickGELU) for activation in activations)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_in_place_quick_gelu_is_bit_identical_to_transformers(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 50, 64, generator=torch.Generator().manual_seed(3)) * 4).to(dtype)
    x[0, 0, :4] = torch.tensor([0.0, -0.0, 30.0, -30.0], dtype=dtype)  # the saturated ends
    expected = QuickGELUActivation()(x)
    with torch.inference_mode():
        got = InPlaceQuickGELU()(x.clone())

    assert got.dtype == dtype
    assert torch.equal(got, expected)


def test_model_runs_in_eval_mode(classifier: ClipClassifier) -> None:
    assert not any(module.training for module in classifier._model.modules())


def test_attributes_describe_the_loaded_model(
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    assert classifier.model_name == str(tiny_model_dir)
    assert classifier.labels == tuple(default_labels)
    assert classifier.targets == tuple(default_targets)
    assert classifier.input_size == 224
    assert classifier.precision == "fp32"


def test_model_revision_is_the_weights_hash_and_stable(
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    weights = (tiny_model_dir / "model.safetensors").read_bytes()

    again = ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets)

    assert classifier.model_revision == f"sha256:{hashlib.sha256(weights).hexdigest()[:16]}"
    assert again.model_revision == classifier.model_revision


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close_to_fp32(
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
    precision: str,
) -> None:
    images = synthetic_images()
    reduced = ClipClassifier.load(
        str(tiny_model_dir),
        default_labels,
        default_targets,
        precision=precision,  # type: ignore[arg-type]
    )

    results = reduced.classify(images)

    assert reduced.precision == precision
    differences = [
        np.abs(probabilities(low) - probabilities(full)).max()
        for low, full in zip(results, classifier.classify(images), strict=True)
    ]
    # Not bit-equal proves the reduced path really ran; close proves it is still CLIP.
    assert 0 < max(differences) < LOOSE
    for result in results:
        assert result.embedding.dtype == np.float32
        assert np.linalg.norm(result.embedding) == pytest.approx(1.0, abs=EXACT)


def test_int8_replaces_the_linear_layers(
    tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    reduced = ClipClassifier.load(
        str(tiny_model_dir), default_labels, default_targets, precision="int8"
    )

    linear = [m for m in reduced._model.modules() if type(m) is torch.nn.Linear]
    assert linear == []


def test_int8_embeddings_point_where_fp32_ones_do(
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    images = synthetic_images()
    reduced = ClipClassifier.load(
        str(tiny_model_dir), default_labels, default_targets, precision="int8"
    )

    cosines = [
        float(np.dot(low.embedding, full.embedding))  # both unit vectors
        for low, full in zip(reduced.classify(images), classifier.classify(images), strict=True)
    ]

    # Quantised weights move every embedding a little, and none far.
    assert max(cosines) < 1.0 - 1e-7
    assert min(cosines) > 0.99


# --- errors --------------------------------------------------------------------------------


def assert_fetch_hint(error: pytest.ExceptionInfo[ModelLoadError], name: str) -> None:
    message = str(error.value)
    assert name in message
    assert "tigerwatch download-model" in message
    assert "model.name_or_path" in message


def test_missing_folder_is_a_clear_load_error(
    tmp_path: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    missing = tmp_path / "clip-vit-base-patch32"

    with pytest.raises(ModelLoadError) as error:
        ClipClassifier.load(str(missing), default_labels, default_targets)

    assert_fetch_hint(error, str(missing))
    assert "does not exist" in str(error.value)


def test_folder_without_weights_is_a_clear_load_error(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    folder = tmp_path / "copied-without-weights"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))

    with pytest.raises(ModelLoadError) as error:
        ClipClassifier.load(str(folder), default_labels, default_targets)

    assert_fetch_hint(error, str(folder))
    assert "model.safetensors" in str(error.value)


def test_truncated_weights_are_a_clear_load_error(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    folder = tmp_path / "half-copied"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    with pytest.raises(ModelLoadError) as error:
        ClipClassifier.load(str(folder), default_labels, default_targets)

    assert_fetch_hint(error, str(folder))


def record_network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name lookup or connection tried from now on, refused and listed."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., NoReturn]:
        def refused(*args: object, **kwargs: object) -> NoReturn:
            attempts.append(f"{what}{args[-1:]}")
            raise OSError(f"test: no network ({what})")

        return refused

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


def go_offline(monkeypatch: pytest.MonkeyPatch, cache: Path | None = None) -> None:
    # huggingface_hub reads these environment variables at import: patch the constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if cache is not None:
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_uncached_hub_name_offline_fails_fast_with_fetch_hint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    go_offline(monkeypatch, cache=tmp_path / "hf-cache")
    name = "tigerwatch-tests/no-such-clip"
    # Fast because it never tries: going to the network would mean ~25 s of retries.
    network = record_network_attempts(monkeypatch)

    with pytest.raises(ModelLoadError) as error:
        ClipClassifier.load(name, default_labels, default_targets)

    assert network == []
    assert_fetch_hint(error, name)
    assert str(tmp_path / "hf-cache") in str(error.value)
    assert "HF_HUB_OFFLINE is set" in str(error.value)
    assert f"download-model {name} ./no-such-clip" in str(error.value)


def test_hub_name_loads_from_the_cache_with_its_commit_as_revision(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--tigerwatch-tests--tiny-clip"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    go_offline(monkeypatch, cache=tmp_path / "hf-cache")

    cached = ClipClassifier.load("tigerwatch-tests/tiny-clip", default_labels, default_targets)

    assert cached.model_revision == commit
    assert cached.model_name == "tigerwatch-tests/tiny-clip"
    assert len(cached.classify(synthetic_images()[:1])) == 1


@pytest.mark.parametrize(
    ("labels", "targets"),
    [
        ([], []),
        (["a photo of a tiger", "a photo of a cat"], [True]),
        (["a photo of a tiger", "a photo of a tiger"], [True, False]),
        (["a photo of a tiger", "a photo of a cat"], [False, False]),
    ],
)
def test_inconsistent_prompts_are_refused(
    tiny_model_dir: Path, labels: list[str], targets: list[bool]
) -> None:
    with pytest.raises(ValueError):
        ClipClassifier.load(str(tiny_model_dir), labels, targets)


def test_unknown_precision_is_refused(
    tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    with pytest.raises(ValueError, match="precision"):
        ClipClassifier.load(
            str(tiny_model_dir),
            default_labels,
            default_targets,
            precision="fp16",  # type: ignore[arg-type]
        )


def test_absent_gpu_is_a_load_error(
    tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    with pytest.raises(ModelLoadError, match=r"cuda:99"):
        ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets, device="cuda:99")


def test_auto_device_loads_where_it_can(
    tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    auto = ClipClassifier.load(str(tiny_model_dir), default_labels, default_targets, device="auto")

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto._text_embeddings.device.type == expected
    assert len(auto.classify(synthetic_images()[:2])) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_results_stay_close_to_cpu(
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
    precision: str,
) -> None:
    on_gpu = ClipClassifier.load(
        str(tiny_model_dir),
        default_labels,
        default_targets,
        precision=precision,  # type: ignore[arg-type]
        device="cuda",
    )

    images = synthetic_images()
    for gpu, cpu in zip(on_gpu.classify(images), classifier.classify(images), strict=True):
        np.testing.assert_allclose(probabilities(gpu), probabilities(cpu), atol=LOOSE)
        assert np.linalg.norm(gpu.embedding) == pytest.approx(1.0, abs=EXACT)


# --- download_model and the test-model script ------------------------------------------------


def test_download_model_saves_a_folder_that_loads_the_same(
    tmp_path: Path,
    classifier: ClipClassifier,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    # A local folder stands in for the hub name: from_pretrained treats both alike.
    out = tmp_path / "downloaded"
    download_model(str(tiny_model_dir), out)

    copy = ClipClassifier.load(str(out), default_labels, default_targets)

    images = synthetic_images()
    for a, b in zip(copy.classify(images), classifier.classify(images), strict=True):
        np.testing.assert_allclose(probabilities(a), probabilities(b), atol=EXACT)


def test_download_model_failure_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_offline(monkeypatch, cache=tmp_path / "hf-cache")

    with pytest.raises(ModelLoadError, match="tigerwatch-tests/no-such-clip"):
        download_model("tigerwatch-tests/no-such-clip", tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_test_model_is_deterministic(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = build_test_model(tmp_path / "again")

    original = (tiny_model_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == original


def test_full_size_test_model_has_vit_b32_architecture(tmp_path: Path) -> None:
    """About 10 s and 600 MB of disk: builds, counts parameters, loads and classifies."""
    out = build_test_model(tmp_path / "full", full_size=True)
    try:
        with safe_open(str(out / "model.safetensors"), "pt") as weights:
            count = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118
        full = ClipClassifier.load(str(out), ["a photo of an Amur tiger", "a photo"], [True, False])
        [result] = full.classify(synthetic_images()[:1])
    finally:
        shutil.rmtree(out)

    assert count == VIT_B32_PARAMETERS
    assert result.embedding.shape == (512,)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=EXACT)
