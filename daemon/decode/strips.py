"""Find the burned-in info strips (date, temperature, logo bands) at a frame's top and bottom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Side = Literal["top", "bottom"]

# A strip is at most this share of the frame's height: a dark band taller than that is
# content (a night sky, a shadow), not a camera's info bar (2-9% on every sample camera).
MAX_FRACTION = 0.15
# ... and at least this many rows of the analysed image: one row is a JPEG edge artefact.
MIN_ROWS = 2
# The outermost rows may be JPEG padding of another colour: the strip may start this far in.
EDGE_ROWS = 2
# Strips are black (every channel <= DARK) or white (every channel >= LIGHT) ...
DARK = 40
LIGHT = 205
# ... and uniform: a background pixel is within TOLERANCE of the strip's level in every channel
# (night content next to a black strip is dark too, but not this uniform).
TOLERANCE = 12
# A strip row is at least this share background (the rest is text or logo).
ROW_BACKGROUND = 0.5
# The picture starts sharply: one of the two rows after the strip is at most this share
# background (0.0-0.1 on the samples; an overexposed sky fades from 0.9 to 0.5 over many rows).
PICTURE_BACKGROUND = 0.25
# The band spans the whole width, unlike the date boxes some cameras paste in a corner: of
# BLOCKS column blocks, WIDE_BLOCKS' share are at least BLOCK_BACKGROUND background (dense
# text leaves a third of a block).
BLOCKS = 16
WIDE_BLOCKS = 0.75
BLOCK_BACKGROUND = 0.3
# It carries text or a logo: INK_SHARE of its pixels differ from its level by INK_CONTRAST.
INK_SHARE = 0.002
INK_CONTRAST = 90


@dataclass(frozen=True)
class Strips:
    """Rows cut from the top and bottom of an image (in that image's own pixels)."""

    top: int = 0
    bottom: int = 0


NO_STRIPS = Strips()


def find_strips(pixels: npt.NDArray[np.uint8]) -> Strips:
    """The info strips of an (H, W, 3) uint8 frame; 0 for a side without one."""
    return Strips(top=_strip_rows(pixels), bottom=_strip_rows(pixels[::-1]))


def _strip_rows(pixels: npt.NDArray[np.uint8]) -> int:
    """Rows of the strip at the start of `pixels` (row 0 is the frame's edge), or 0."""
    window = pixels[: max(MIN_ROWS + EDGE_ROWS, int(pixels.shape[0] * MAX_FRACTION))]
    level = _strip_level(window[: EDGE_ROWS + 1])
    if level is None:
        return 0
    distance = _distance(window, level)
    background = distance <= TOLERANCE
    share = background.mean(axis=1)
    inside = np.flatnonzero(share[: EDGE_ROWS + 1] >= ROW_BACKGROUND)
    if inside.size == 0:
        return 0
    outside = np.flatnonzero(share[inside[0] :] < ROW_BACKGROUND)
    if outside.size == 0:
        return 0  # uniform beyond the largest strip: a dark sky or a blank frame, not a strip
    rows = int(inside[0] + outside[0])
    band = slice(int(inside[0]), rows)
    if rows < MIN_ROWS or share[rows : rows + 2].min() > PICTURE_BACKGROUND:
        return 0  # no sharp edge: a bright sky or a dark shadow fading into the picture
    if not _spans_width(background[band]):
        return 0
    return rows if _has_ink(distance[band]) else 0


def _distance(window: npt.NDArray[np.uint8], level: int) -> npt.NDArray[np.int16]:
    """Per pixel, the largest difference of a channel from `level` (channel by channel: numpy
    reduces a length-3 last axis far slower than it combines planes)."""
    red, green, blue = (np.abs(window[:, :, channel] - np.int16(level)) for channel in range(3))
    distance: npt.NDArray[np.int16] = np.maximum(np.maximum(red, green), blue)
    return distance


def _strip_level(edge: npt.NDArray[np.uint8]) -> int | None:
    """The strip's grey level from the rows at the edge; None when they are neither black nor white.

    The outermost row alone can be a JPEG padding artefact, so the first rows are pooled.
    """
    level = np.median(edge.reshape(-1, edge.shape[-1]), axis=0)
    if level.max() <= DARK or level.min() >= LIGHT:
        return round(float(level.mean()))
    return None


def _spans_width(background: npt.NDArray[np.bool_]) -> bool:
    blocks = np.array_split(background, BLOCKS, axis=1)
    wide = sum(bool(block.mean() >= BLOCK_BACKGROUND) for block in blocks)
    return wide >= WIDE_BLOCKS * BLOCKS


def _has_ink(distance: npt.NDArray[np.int16]) -> bool:
    """Text or a logo: pixels far from the band's colour (light on dark, or dark on light)."""
    return bool((distance >= INK_CONTRAST).mean() >= INK_SHARE)
