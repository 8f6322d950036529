"""Camera metadata (capture time, make, model, software) read from EXIF; never fatal."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

# EXIF tag numbers (TIFF/EXIF 2.32).
_MAKE = 0x010F
_MODEL = 0x0110
_SOFTWARE = 0x0131
_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME_DIGITIZED = 0x9004

# Camera clocks reset to 1970/1980 or set to garbage after a battery swap; such times mislead
# more than they help.
_MIN_YEAR = 1990
_MAX_YEAR = 2100

# "YYYY:MM:DD HH:MM:SS" is the standard; some firmware writes "-", "/" or "." in the date.
_EXIF_DATETIME = re.compile(
    r"(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})[ T](\d{1,2}):(\d{1,2}):(\d{1,2})"
)


@dataclass(frozen=True)
class CameraMetadata:
    """What the camera says about a frame; every field is None (or False) when unknown.

    Text fields keep the camera's own spelling ("BolyMedia", "RECONYX", "Reconyx") with NUL
    padding, control characters and runs of whitespace removed. Some vendors fill Make/Model with
    NULs and are known only by ``software`` (e.g. 'DL560PBNx02020'); old Cuddebacks swap Make and
    Model. `normalised_camera` turns these into the names the daemon records and matches.
    """

    capture_time: datetime | None = None  # naive camera-local time; camera clocks can be off
    camera_make: str | None = None
    camera_model: str | None = None
    software: str | None = None


EMPTY_METADATA = CameraMetadata()

# Firmware builds some vendors write as Software while Make/Model are NULs: a model code, "x",
# a build number ('BS686BWNx14241', 'DL560PBNx02020'). The code names the camera model.
_FIRMWARE = re.compile(r"([0-9a-z]{4,12})x[0-9a-f]{3,8}")
# Vendors of firmware codes, by prefix, as the samples show them: 'BS...' on frames whose Make
# says BUSHNELL (and a Bushnell logo in the strip), 'DL...' under a 'DLCcovert.com' strip.
_FIRMWARE_VENDORS = {"bs": "bushnell", "dl": "covert"}
# Vendor names as cameras write them in Make: one in Model (and not in Make) means the two are
# swapped, as old Cuddebacks do.
_VENDORS = frozenset(
    {
        "bolymedia", "browning", "bushnell", "covert", "cuddeback", "moultrie", "primos",
        "reconyx", "scoutguard", "spypoint", "stealth cam", "uway", "wildgame",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Camera:
    """A camera's normalised Make and Model: case-folded, vendor known, never swapped."""

    make: str | None = None
    model: str | None = None

    @property
    def name(self) -> str | None:
        """'make model' (either alone when the other is unknown): the key of per-camera settings."""
        return " ".join(part for part in (self.make, self.model) if part) or None


def read_metadata(image: Image.Image, *, name: str) -> CameraMetadata:
    """Read camera metadata from `image`'s EXIF; logs a warning naming `name` when it is corrupt.

    Never raises: metadata must not stop a frame from being classified.
    """
    try:
        exif = image.getexif()
        base = dict(exif)
    except Exception as err:  # EXIF parsers raise anything from struct.error to KeyError
        _warn_corrupt(name, "EXIF", err)
        return EMPTY_METADATA
    if not base:
        return EMPTY_METADATA
    sub_ifd = (_read_ifd(exif, _EXIF_IFD, name=name) or {}) if _EXIF_IFD in base else {}
    return CameraMetadata(
        capture_time=_capture_time(base, sub_ifd),
        camera_make=clean_text(base.get(_MAKE)),
        camera_model=clean_text(base.get(_MODEL)),
        software=clean_text(base.get(_SOFTWARE)),
    )


def normalised_camera(metadata: CameraMetadata) -> Camera:
    """The camera as recorded: NULs and padding gone (see `clean_text`), case folded, Make and
    Model put back in place when Model holds a vendor name, the model taken from a firmware
    Software string when Model is empty."""
    make, model = _folded(metadata.camera_make), _folded(metadata.camera_model)
    if model in _VENDORS and make not in _VENDORS:
        make, model = model, make
    firmware = _FIRMWARE.fullmatch(_folded(metadata.software) or "")
    if model is None and firmware is not None:
        model = firmware.group(1)
        make = make or _FIRMWARE_VENDORS.get(model[:2])
    return Camera(make=make, model=model)


def _folded(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def clean_text(value: object) -> str | None:
    """Normalise an EXIF text value: NULs and control characters dropped, whitespace collapsed."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    printable = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return " ".join(printable.split()) or None


def parse_exif_datetime(value: object) -> datetime | None:
    """Parse an EXIF date-time string; None when absent, malformed or implausible."""
    text = clean_text(value)
    if text is None:
        return None
    match = _EXIF_DATETIME.match(text)
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(group) for group in match.groups())
        parsed = datetime(year, month, day, hour, minute, second)
    except ValueError:  # "0000:00:00 00:00:00", month 13, hour 24...
        return None
    return parsed if _MIN_YEAR <= parsed.year <= _MAX_YEAR else None


def _capture_time(base: Mapping[int, Any], sub_ifd: Mapping[int, Any]) -> datetime | None:
    candidates = (
        sub_ifd.get(_DATETIME_ORIGINAL),
        sub_ifd.get(_DATETIME_DIGITIZED),
        base.get(_DATETIME),
    )
    for value in candidates:
        parsed = parse_exif_datetime(value)
        if parsed is not None:
            return parsed
    return None


def _read_ifd(exif: Image.Exif, tag: int, *, name: str) -> dict[int, Any] | None:
    try:
        return dict(exif.get_ifd(tag))
    except Exception as err:  # a corrupt sub-IFD must not cost the tags already read
        _warn_corrupt(name, f"EXIF IFD 0x{tag:04x}", err)
        return None


def _warn_corrupt(name: str, part: str, err: Exception) -> None:
    logger.warning("%s: corrupt %s ignored (%s: %s)", name, part, type(err).__name__, err)
