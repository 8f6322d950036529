"""Decode camera-trap image bytes safely into upright RGB images with their camera metadata."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from daemon.decode.exif import CameraMetadata, read_metadata

logger = logging.getLogger(__name__)

DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG", "WEBP")
DEFAULT_MAX_PIXELS: int = 120_000_000

# Exceptions Pillow's plugins are known to raise on malformed input. MemoryError and programming
# errors are deliberately absent: they are not a property of one bad file.
_DECODER_FAILURES = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    LookupError,
    TypeError,
    ArithmeticError,
)
_DRAFT_FORMATS = frozenset({"JPEG", "MPO"})
_TRANSPOSED_ORIENTATIONS = frozenset(range(2, 9))  # 1 is upright; other values are invalid
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Transparent pixels are composited on white, not black: white is how a viewer shows a
# transparent picture on a page (and how CLIP's web training images looked), while a black
# background would make it look like a dark night-IR frame and skew day/night and grey checks.
_BACKGROUND = (255, 255, 255)


class ImageError(Exception):
    """A file that cannot become an image; `str(err)` is "<path>: <reason>"."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str]]:
        # Keeps the error picklable (process pools, multiprocessing queues).
        return (type(self), (self.path, self.reason))


class UnsupportedImageError(ImageError):
    """Not an image, or an image in a format that is not accepted."""


class TruncatedImageError(ImageError):
    """The image data ends early (an interrupted upload or copy)."""


class ImageTooLargeError(ImageError):
    """More pixels than allowed: refused from the header, before decoding."""


class UnreadableImageError(ImageError):
    """The operating system could not read the file (missing, permission, directory...)."""


class CorruptImageError(ImageError):
    """The decoder failed for another reason."""


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image ready for the model, with what the file said about it."""

    image: Image.Image
    format: str
    original_size: tuple[int, int]  # (width, height) as stored, before draft and rotation
    metadata: CameraMetadata


def load_image(
    path: Path,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Read `path` and decode it; see `decode_image`. OS errors become UnreadableImageError."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UnreadableImageError(str(path), err.strerror or str(err)) from err
    return decode_image(
        data, name=str(path), formats=formats, max_pixels=max_pixels, draft_size=draft_size
    )


# Camera traps make 4:3, 3:2 and 16:9 frames, panoramic ones about 3.6:1; see _check_pixels.
MAX_ASPECT_RATIO = 8


def decode_image(
    data: bytes,
    *,
    name: str,
    formats: Sequence[str] = DEFAULT_FORMATS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: int | None = None,
) -> DecodedImage:
    """Decode `data` (named `name` in errors and logs) into an upright RGB image.

    Only Pillow decoders for `formats` are tried; the content decides the format, not the name.
    Images over `max_pixels` are refused from their header (Pillow's own bomb limit, twice
    `Image.MAX_IMAGE_PIXELS`, still applies above that). With `draft_size`, JPEGs decode at the
    smallest 1/2, 1/4 or 1/8 scale that keeps both sides >= `draft_size`. Multi-frame files give
    their first frame. Raises an ImageError subclass; never pads a truncated file.
    """
    if draft_size is not None and draft_size < 1:
        raise ValueError(f"draft_size must be positive, got {draft_size}")
    if not data:
        raise UnsupportedImageError(name, "empty file (0 bytes)")
    accepted = tuple(fmt.upper() for fmt in formats)
    if "WEBP" in accepted:
        _check_webp_header(data, name=name, max_pixels=max_pixels)
    with _decoder_errors(name), Image.open(BytesIO(data), formats=_openers(accepted)) as image:
        image_format = _accepted_format(image, accepted, name=name)
        original_size = image.size
        _check_pixels(original_size, max_pixels, name=name)
        if draft_size is not None and image_format in _DRAFT_FORMATS:
            image.draft("RGB", (draft_size, draft_size))
        image.load()
        metadata = read_metadata(image, name=name)
        rgb = _to_rgb(_upright(image, name=name))
    return DecodedImage(rgb, image_format, original_size, metadata)


@contextmanager
def _decoder_errors(name: str) -> Iterator[None]:
    """Turn Pillow's assorted failures into typed ImageErrors that name the file."""
    try:
        yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # The warning arrives as an exception only when warnings are errors (python -W error).
        raise ImageTooLargeError(name, str(err)) from err
    except UnidentifiedImageError as err:
        raise UnsupportedImageError(name, "not an image in an accepted format") from err
    except _DECODER_FAILURES as err:
        if "truncated" in str(err).lower():
            raise TruncatedImageError(name, str(err)) from err
        raise CorruptImageError(name, f"{type(err).__name__}: {err}") from err


def _openers(accepted: Sequence[str]) -> list[str]:
    """Pillow format names to try: MPO has no opener of its own, its JPEG factory makes MPOs."""
    openers: list[str] = []
    for fmt in accepted:
        opener = "JPEG" if fmt == "MPO" else fmt
        if opener not in openers:
            openers.append(opener)
    return openers


def _accepted_format(image: ImageFile.ImageFile, accepted: Sequence[str], *, name: str) -> str:
    # The JPEG opener also yields MPO files: accepting one must not silently accept the other.
    if image.format is None or image.format not in accepted:
        raise UnsupportedImageError(name, f"{image.format} images are not accepted")
    return image.format


def _check_pixels(size: tuple[int, int], max_pixels: int, *, name: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            name, f"{width}x{height} is {width * height} pixels, more than {max_pixels}"
        )
    # A 1x2000 PNG of 93 bytes passes any pixel limit, but scaling its short side to the
    # model's 224 made a 224x448000 image: gigabytes, and thousands of crops in one batch.
    if max(width, height) > MAX_ASPECT_RATIO * max(1, min(width, height)):
        raise UnsupportedImageError(
            name,
            f"{width}x{height} is more than {MAX_ASPECT_RATIO} times as long as it is wide: "
            "not a camera frame",
        )


def _check_webp_header(data: bytes, *, name: str, max_pixels: int) -> None:
    """Check a WebP's size and length from its header: Pillow allocates the canvas on open."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return
    declared_length = int.from_bytes(data[4:8], "little") + 8
    if len(data) < declared_length:
        raise TruncatedImageError(
            name, f"WebP data is truncated ({len(data)} of {declared_length} bytes)"
        )
    size = _webp_canvas_size(data)
    if size is not None:
        _check_pixels(size, max_pixels, name=name)


def _webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _upright(image: Image.Image, *, name: str) -> Image.Image:
    """`image` turned upright per its EXIF Orientation; as stored when the EXIF is corrupt.

    Either returns a fully transposed new image or `image` itself, never a half-updated one.
    """
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) not in _TRANSPOSED_ORIENTATIONS:
            return image  # exif_transpose would return a copy: skip it
        return ImageOps.exif_transpose(image)
    except Exception as err:  # EXIF parsers raise anything; it must not block classification
        logger.warning(
            "%s: EXIF orientation not applied, corrupt EXIF (%s: %s)",
            name,
            type(err).__name__,
            err,
        )
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB; returns `image` itself when it is already plain RGB (no copy)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # convert() would clip 16-bit values at 255, turning the picture white: scale instead.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _flatten(image.convert("RGBA"))
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _flatten(rgba: Image.Image) -> Image.Image:
    flat = Image.new("RGB", rgba.size, _BACKGROUND)
    flat.paste(rgba, mask=rgba)  # an RGBA mask pastes through its alpha band
    return flat
