"""The model's views of a frame: CLIP's centre crop, the letterboxed frame, or squares across it."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from daemon.decode.preprocess import PreprocessSpec, resized_rgb, to_pixels, to_rgb, to_values

View = Literal["center", "pad", "crops"]
VIEWS: tuple[View, ...] = ("center", "pad", "crops")
# Neighbouring crops share at least this share of their side, so an animal cut by one crop's
# edge is whole (or nearly) in the next.
MIN_OVERLAP = 0.125


def to_views(image: Image.Image, spec: PreprocessSpec, view: View) -> npt.NDArray[np.float32]:
    """The model inputs of one frame for `view`: (V, 3, crop, crop) float32, V >= 1.

    `center` is exactly CLIP's processor (one view); `pad` letterboxes the whole frame on CLIP's
    mean colour (normalised to zero: neutral to the model) and resizes it (one view); `crops`
    resizes as `center` does, then takes `crop_count` overlapping squares along the long side.
    """
    if view == "center":
        return to_pixels(image, spec)[np.newaxis]
    if view == "pad":
        return to_pixels(_letterboxed(image, spec), spec)[np.newaxis]
    if view == "crops":
        return _crops(image, spec)
    raise ValueError(f"unknown view {view!r}: expected one of {', '.join(VIEWS)}")


def crop_count(long_side: int, short_side: int) -> int:
    """Squares of side `short_side` needed to cover `long_side` with MIN_OVERLAP between them.

    One for a square frame, two for 4:3 (overlap 2/3) and 16:9 (overlap 0.22), three for 2:1.
    """
    if long_side <= short_side:
        return 1
    count = max(2, math.ceil(long_side / short_side))
    while (count * short_side - long_side) / (count - 1) < MIN_OVERLAP * short_side:
        count += 1
    return count


def crop_offsets(long_side: int, side: int) -> list[int]:
    """Start of each square along the long side: evenly spaced, first and last at the edges."""
    count = crop_count(long_side, side)
    if count == 1:
        return [max(0, (long_side - side) // 2)]
    return [round(index * (long_side - side) / (count - 1)) for index in range(count)]


def _crops(image: Image.Image, spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    resized = resized_rgb(image, spec)  # the centre view's resize: one resize serves all crops
    width, height = resized.size
    side = spec.crop
    landscape = width >= height
    across = (height - side) // 2 if landscape else (width - side) // 2
    boxes = [
        (offset, across, offset + side, across + side)
        if landscape
        else (across, offset, across + side, offset + side)
        for offset in crop_offsets(width if landscape else height, side)
    ]
    return np.stack([to_values(np.asarray(resized.crop(box)), spec) for box in boxes])


def _letterboxed(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    rgb = to_rgb(image)
    width, height = rgb.size
    side = max(width, height)
    fill = tuple(round(channel * 255) for channel in spec.mean)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(rgb, ((side - width) // 2, (side - height) // 2))
    return canvas
