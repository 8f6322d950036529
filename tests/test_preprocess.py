"""Tests for daemon.decode.preprocess: the same pixels as transformers' CLIP image processor."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from transformers import CLIPProcessor

from daemon.decode.imaging import ImageError, decode_image
from daemon.decode.preprocess import (
    PreprocessSpec,
    normalise_levels,
    spec_from_processor,
    to_pixels,
    to_values,
)

SIZES = [
    (224, 224),
    (500, 375),
    (375, 500),
    (1000, 223),
    (223, 1000),
    (4000, 3000),
    (641, 479),  # odd differences: the centre crop offset rounds down
    (479, 641),
    (225, 224),
    (224, 225),
    (300, 1),  # shorter than the crop before resizing
    (1, 300),
    (16, 16),  # enlarged
]


@pytest.fixture(scope="module")
def image_processor(tiny_model_dir: Path) -> Any:
    return CLIPProcessor.from_pretrained(str(tiny_model_dir), backend="pil").image_processor


@pytest.fixture(scope="module")
def spec(image_processor: Any) -> PreprocessSpec:
    return spec_from_processor(image_processor)


def reference(image_processor: Any, image: Image.Image) -> npt.NDArray[np.float32]:
    pixels: npt.NDArray[np.float32] = image_processor(images=image, return_tensors="np")[
        "pixel_values"
    ][0]
    return pixels


def assert_same_as_processor(
    image_processor: Any, spec: PreprocessSpec, image: Image.Image
) -> None:
    ours = to_pixels(image, spec)
    theirs = reference(image_processor, image)
    assert ours.shape == theirs.shape == (3, spec.crop, spec.crop)
    assert ours.dtype == np.float32
    assert ours.flags.c_contiguous
    # Bit for bit: the same float32 operations in the same order, not merely close values.
    assert np.array_equal(ours, theirs), f"max abs difference {np.abs(ours - theirs).max()}"


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random pixels: every resampling weight and every channel level matters."""
    width, height = size
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def gradient(size: tuple[int, int]) -> Image.Image:
    """Smooth content, distinct per channel, as a photograph has."""
    width, height = size
    x = np.linspace(0, 255, width)[np.newaxis, :].repeat(height, axis=0)
    y = np.linspace(0, 255, height)[:, np.newaxis].repeat(width, axis=1)
    channels = np.stack([x, y, (x + y) / 2], axis=-1).round().astype(np.uint8)
    return Image.fromarray(channels)


# --- the processor's settings ---------------------------------------------------------------------


def test_spec_reads_the_clip_processor_settings(spec: PreprocessSpec) -> None:
    assert spec == PreprocessSpec(
        size=224,
        crop=224,
        mean=(0.48145466, 0.4578275, 0.40821073),
        std=(0.26862954, 0.26130258, 0.27577711),
        resample=int(Image.Resampling.BICUBIC),
        rescale_factor=1 / 255,
    )


def test_spec_survives_pickling(spec: PreprocessSpec) -> None:
    assert pickle.loads(pickle.dumps(spec)) == spec


def clip_like(**overrides: object) -> SimpleNamespace:
    settings: dict[str, object] = {
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "do_resize": True,
        "do_center_crop": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "do_pad": None,
    }
    settings.update(overrides)
    return SimpleNamespace(**settings)


def test_spec_accepts_plain_dicts_and_a_single_mean() -> None:
    spec = spec_from_processor(clip_like(image_mean=0.5, resample=None))
    assert spec.mean == (0.5, 0.5, 0.5)
    assert spec.std == (0.25, 0.25, 0.25)
    assert spec.resample == int(Image.Resampling.BILINEAR)  # transformers' fallback


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"do_center_crop": False}, "do_center_crop off"),
        ({"do_normalize": False}, "do_normalize off"),
        ({"do_pad": True}, "do_pad on"),
        ({"size": {"shortest_edge": 224, "longest_edge": 300}}, "shortest-edge"),
        ({"size": {"height": 224, "width": 224}}, "shortest-edge"),
        ({"crop_size": {"height": 224, "width": 200}}, "square"),
        ({"image_std": [0.2, 0.2]}, "3 values"),
        ({"crop_size": {"height": 256, "width": 256}}, "larger than"),
    ],
)
def test_spec_refuses_settings_it_cannot_reproduce(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        spec_from_processor(clip_like(**overrides))


# --- the pixel values -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_noise_matches_the_processor(
    image_processor: Any, spec: PreprocessSpec, size: tuple[int, int]
) -> None:
    assert_same_as_processor(image_processor, spec, noise(size))


@pytest.mark.parametrize("size", [(500, 375), (641, 479), (223, 1000)], ids=str)
def test_smooth_images_match_the_processor(
    image_processor: Any, spec: PreprocessSpec, size: tuple[int, int]
) -> None:
    assert_same_as_processor(image_processor, spec, gradient(size))


def test_grey_image_converted_to_rgb_matches(image_processor: Any, spec: PreprocessSpec) -> None:
    grey = noise((500, 375)).convert("L")
    assert_same_as_processor(image_processor, spec, grey.convert("RGB"))
    assert_same_as_processor(image_processor, spec, grey)  # converted inside, as the processor


def test_transparency_is_flattened_on_white_like_the_processor(
    image_processor: Any, spec: PreprocessSpec
) -> None:
    rgba = noise((400, 300)).convert("RGBA")
    rgba.putalpha(noise((400, 300), seed=1).convert("L"))
    assert_same_as_processor(image_processor, spec, rgba)
    palette = noise((300, 400)).convert("P")
    palette.info["transparency"] = 0
    assert_same_as_processor(image_processor, spec, palette)


def test_output_does_not_depend_on_the_input_object(spec: PreprocessSpec) -> None:
    image = noise((500, 375))
    before = image.tobytes()
    first = to_pixels(image, spec)
    assert image.tobytes() == before  # the caller's image is left alone
    assert np.array_equal(first, to_pixels(image.copy(), spec))


def test_another_spec_gives_other_values(spec: PreprocessSpec) -> None:
    image = noise((500, 375))
    brighter = PreprocessSpec(
        size=spec.size,
        crop=spec.crop,
        mean=(0.0, 0.0, 0.0),
        std=spec.std,
        resample=spec.resample,
        rescale_factor=spec.rescale_factor,
    )
    assert not np.array_equal(to_pixels(image, spec), to_pixels(image, brighter))
    small = PreprocessSpec(64, 48, spec.mean, spec.std, spec.resample, spec.rescale_factor)
    assert to_pixels(image, small).shape == (3, 48, 48)


def test_real_samples_match_the_processor(
    image_processor: Any, spec: PreprocessSpec, samples_dir: Path
) -> None:
    checked = 0
    for path in sorted(samples_dir.rglob("*.[jJ][pP][gG]")):
        try:
            decoded = decode_image(path.read_bytes(), name=str(path), draft_size=spec.crop)
        except ImageError:
            continue  # the truncated sample: nothing to preprocess
        assert_same_as_processor(image_processor, spec, decoded.image)
        checked += 1
    assert checked >= 20


# --- uint8 levels from the decoders, normalised in the model's process ---------------------------


def test_normalised_levels_equal_the_float_path_bit_for_bit(spec: PreprocessSpec) -> None:
    rng = np.random.default_rng(11)
    levels = rng.integers(0, 256, (3, spec.crop, spec.crop, 3), dtype=np.uint8)
    levels[0] = np.resize(np.arange(256, dtype=np.uint8), levels[0].shape)  # every level

    normalised = normalise_levels(levels, spec)

    assert normalised.shape == (3, 3, spec.crop, spec.crop)
    assert normalised.dtype == np.float32 and normalised.flags.c_contiguous
    for index in range(3):
        assert np.array_equal(normalised[index], to_values(levels[index], spec))


def test_normalised_levels_of_a_centre_crop_equal_clips_processor(
    image_processor: Any, spec: PreprocessSpec
) -> None:
    from daemon.decode.views import to_view_levels

    image = noise((500, 375), seed=12)

    [normalised] = normalise_levels(to_view_levels(image, spec, "center"), spec)

    np.testing.assert_array_equal(normalised, reference(image_processor, image))


def test_normalise_levels_refuses_floats_and_other_shapes(spec: PreprocessSpec) -> None:
    with pytest.raises(ValueError, match="expected uint8 views"):
        normalise_levels(np.zeros((1, 8, 8, 3), np.float32), spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected uint8 views"):
        normalise_levels(np.zeros((1, 3, 8, 8), np.uint8), spec)
