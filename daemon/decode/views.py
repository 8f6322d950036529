"""The model's views of a frame: CLIP's centre crop, the letterboxed frame, or squares across it."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from daemon.decode.preprocess import PreprocessSpec, normalise_levels, resized_rgb, to_rgb

View = Literal["center", "pad", "crops"]
VIEWS: tuple[View, ...] = ("center", "pad", "crops")
# Neighbouring crops share at least this share of their side, so an animal cut by one crop's
# edge is whole (or nearly) in the next.
MIN_OVERLAP = 0.125


def to_views(image: Image.Image, spec: PreprocessSpec, view: View) -> npt.NDArray[np.float32]:
    """The model inputs of one frame for `view`: (V, 3, crop, crop) float32, V >= 1.

    `to_view_levels` normalised as CLIP's processor does: `center` is exactly its output.
    """
    return normalise_levels(to_view_levels(image, spec, view), spec)


def to_view_levels(image: Image.Image, spec: PreprocessSpec, view: View) -> npt.NDArray[np.uint8]:
    """The views of one frame as uint8 RGB levels: (V, crop, crop, 3), V >= 1, contiguous.

    `center` is CLIP's resize and centre crop (one view); `pad` letterboxes the whole frame on
    CLIP's mean colour (normalised to zero: neutral to the model) and resizes it (one view);
    `crops` resizes as `center` does, then takes `crop_count` overlapping squares along the long
    side. What the decoders send: a quarter of the bytes of float32, normalised by the model's
    process (`preprocess.normalise_levels`).
    """
    if view == "center":
        return _squares(resized_rgb(image, spec), spec, centred=True)
    if view == "pad":
        return _squares(resized_rgb(_letterboxed(image, spec), spec), spec, centred=True)
    if view == "crops":
        return _squares(resized_rgb(image, spec), spec, centred=False)
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


def _squares(resized: Image.Image, spec: PreprocessSpec, *, centred: bool) -> npt.NDArray[np.uint8]:
    """The centre square of `resized` (CLIP's centre crop), or the overlapping squares along its
    long side; one resize serves every square, each cut once from the resized pixels."""
    pixels = np.asarray(resized)
    height, width = pixels.shape[:2]
    side = spec.crop
    landscape = width >= height
    across = (height - side) // 2 if landscape else (width - side) // 2
    long_side = width if landscape else height
    offsets = [(long_side - side) // 2] if centred else crop_offsets(long_side, side)
    squares = [
        pixels[across : across + side, offset : offset + side]
        if landscape
        else pixels[offset : offset + side, across : across + side]
        for offset in offsets
    ]
    return np.stack(squares)


def _letterboxed(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    rgb = to_rgb(image)
    width, height = rgb.size
    side = max(width, height)
    fill = tuple(round(channel * 255) for channel in spec.mean)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(rgb, ((side - width) // 2, (side - height) // 2))
    return canvas
