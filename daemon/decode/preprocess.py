"""CLIP image preprocessing in plain Pillow and NumPy, identical to transformers' PIL backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

# transformers' resize falls back to bilinear when the processor names no filter.
_DEFAULT_RESAMPLE = int(Image.Resampling.BILINEAR)
_CHANNELS = 3
_WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to reproduce a CLIPImageProcessor's pixel values; picklable."""

    size: int  # the shortest edge is resized to this
    crop: int  # then a centred crop x crop square is taken
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int  # a PIL resampling filter id (CLIP: bicubic, 3)
    rescale_factor: float  # uint8 to [0, 1]: 1/255

    def __post_init__(self) -> None:
        if self.size < 1 or self.crop < 1:
            raise ValueError(f"size and crop must be positive, got {self.size} and {self.crop}")
        if self.crop > self.size:
            # The processor would pad with zeros then; no CLIP checkpoint does that.
            raise ValueError(f"crop {self.crop} is larger than the resize target {self.size}")
        if len(self.mean) != _CHANNELS or len(self.std) != _CHANNELS:
            raise ValueError(f"mean and std need 3 values each, got {self.mean} and {self.std}")
        if any(value == 0 for value in self.std):
            raise ValueError(f"std must not contain 0, got {self.std}")


def to_pixels(image: Image.Image, spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """`image` resized, centre-cropped, rescaled and normalised: (3, crop, crop) float32.

    The same steps, in the same order and precision, as transformers 5's PIL-backend
    CLIPImageProcessor, so the values equal the processor's bit for bit.
    """
    resized = resized_rgb(image, spec)
    width, height = resized.size
    left, top = (width - spec.crop) // 2, (height - spec.crop) // 2
    return to_values(np.asarray(resized.crop((left, top, left + spec.crop, top + spec.crop))), spec)


def resized_rgb(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """`image` in RGB with its shortest side resized to `spec.size`, as the processor does."""
    rgb = to_rgb(image)
    return rgb.resize(_resized_size(rgb.size, spec.size), resample=spec.resample)


def to_values(pixels: npt.NDArray[np.uint8], spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 to the model's rescaled, normalised (3, H, W) float32."""
    return _normalised(pixels, _lookup_table(spec))


def normalise_levels(
    levels: npt.NDArray[np.uint8], spec: PreprocessSpec
) -> npt.NDArray[np.float32]:
    """(N, H, W, 3) uint8 views to the model's (N, 3, H, W) float32: `to_values` on each, bit
    for bit. Decoders send the uint8 levels (a quarter of the bytes); the model's process
    normalises them here."""
    if levels.ndim != 4 or levels.shape[3] != _CHANNELS or levels.dtype != np.uint8:
        raise ValueError(f"expected uint8 views (N, H, W, 3), got {levels.dtype} {levels.shape}")
    table = _lookup_table(spec)
    count, height, width, _ = levels.shape
    out = np.empty((count, _CHANNELS, height, width), dtype=np.float32)
    for index in range(count):
        for channel in range(_CHANNELS):
            np.take(table[channel], levels[index, :, :, channel], out=out[index, channel])
    return out


def spec_from_processor(image_processor: Any) -> PreprocessSpec:
    """Read a CLIPImageProcessor's settings (duck-typed: transformers is not imported here).

    Raises ValueError for settings `to_pixels` does not reproduce (no resize or crop, padding,
    a longest-edge limit, a non-square crop).
    """
    _require_standard_steps(image_processor)
    size = getattr(image_processor, "size", None) or {}
    crop_size = getattr(image_processor, "crop_size", None) or {}
    shortest_edge = size.get("shortest_edge")
    if not shortest_edge or size.get("longest_edge"):
        raise ValueError(f"only a shortest-edge resize is supported, got size {size}")
    crop_height, crop_width = crop_size.get("height"), crop_size.get("width")
    if not crop_height or crop_height != crop_width:
        raise ValueError(f"only a square centre crop is supported, got crop_size {crop_size}")
    resample = getattr(image_processor, "resample", None)
    return PreprocessSpec(
        size=int(shortest_edge),
        crop=int(crop_height),
        mean=_three(image_processor.image_mean, "image_mean"),
        std=_three(image_processor.image_std, "image_std"),
        resample=_DEFAULT_RESAMPLE if resample is None else int(resample),
        rescale_factor=float(image_processor.rescale_factor),
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """As transformers' convert_to_rgb: transparency is composited on white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image  # convert() would only copy it
    return image.convert("RGB")


def _resized_size(size: tuple[int, int], shortest_edge: int) -> tuple[int, int]:
    """(width, height) with the short side at `shortest_edge`; the long side is truncated.

    Written exactly as transformers' get_resize_output_image_size, float division included.
    """
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


def _lookup_table(spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    """(3, 256): the output value of every uint8 level in every channel.

    The processor rescales in float64 and casts to float32, then normalises in float32. Every
    output depends only on (channel, level), so computing those steps once per level and indexing
    gives the same bits at a fraction of the cost.
    """
    levels = (np.arange(256, dtype=np.float64) * spec.rescale_factor).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, np.newaxis]
    std = np.asarray(spec.std, dtype=np.float32)[:, np.newaxis]
    table: npt.NDArray[np.float32] = (levels[np.newaxis, :] - mean) / std
    return table


def _normalised(
    pixels: npt.NDArray[np.uint8], table: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 to (3, H, W) float32 through the per-channel lookup table."""
    height, width, _ = pixels.shape
    out = np.empty((_CHANNELS, height, width), dtype=np.float32)
    for channel in range(_CHANNELS):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


def _require_standard_steps(image_processor: Any) -> None:
    steps = ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb")
    skipped = [step for step in steps if not getattr(image_processor, step, False)]
    if skipped:
        raise ValueError(f"image processor settings not supported: {', '.join(skipped)} off")
    if getattr(image_processor, "do_pad", False):
        raise ValueError("image processor settings not supported: do_pad on")


def _three(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """A per-channel triple; a single number applies to all three channels, as in transformers."""
    if isinstance(value, int | float):
        return (float(value),) * 3
    values = tuple(float(item) for item in value)
    if len(values) != _CHANNELS:
        raise ValueError(f"{name} needs 3 values, got {value}")
    return values[0], values[1], values[2]
