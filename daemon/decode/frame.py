"""Cut a decoded frame's info strips and judge its light: what the model's views are made from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from daemon.decode.imaging import DecodedImage
from daemon.decode.light import is_infrared
from daemon.decode.strip_rules import StripSettings
from daemon.decode.strips import NO_STRIPS, Strips, find_strips


@dataclass(frozen=True)
class Frame:
    """The picture the model sees (strips cut), what was cut, and its light."""

    image: Image.Image
    strip_top: int  # rows cut, in pixels of the original (upright) frame; 0 when none
    strip_bottom: int
    infrared: bool  # grey content: a night infrared frame


def prepare_frame(decoded: DecodedImage, settings: StripSettings, camera: str | None) -> Frame:
    """Cut `decoded`'s strips (found, or as configured for `camera`) and judge the rest's light.

    Works on the decoded (draft-scaled) image: a few milliseconds whatever the file's size.
    """
    pixels = np.asarray(decoded.image)  # RGB: the decoder converted every mode
    height, width = pixels.shape[:2]
    cut = _strips(pixels, settings, camera)
    if cut.top + cut.bottom >= height:
        cut = NO_STRIPS  # nothing would be left: configured shares meant for a bigger frame
    image = decoded.image
    if cut != NO_STRIPS:
        image = image.crop((0, cut.top, width, height - cut.bottom))
    scale = _upright_height(decoded) / height
    return Frame(
        image=image,
        strip_top=round(cut.top * scale),
        strip_bottom=round(cut.bottom * scale),
        infrared=is_infrared(pixels[cut.top : height - cut.bottom]),
    )


def _strips(pixels: npt.NDArray[np.uint8], settings: StripSettings, camera: str | None) -> Strips:
    rule = settings.rule_for(camera)
    if rule is None:
        return find_strips(pixels) if settings.detect else NO_STRIPS
    if rule.detect:
        return find_strips(pixels)
    height = pixels.shape[0]
    return Strips(top=round(rule.top * height), bottom=round(rule.bottom * height))


def _upright_height(decoded: DecodedImage) -> int:
    """The original frame's height once turned upright (EXIF orientations 5-8 swap the sides)."""
    width, height = decoded.image.size
    stored_width, stored_height = decoded.original_size
    turned = (width > height) != (stored_width > stored_height)
    return stored_width if turned else stored_height
