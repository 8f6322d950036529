"""Tests for daemon.decode.imaging: every sample and malformed file ends in RGB or a typed error."""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFile, ImageStat

from daemon.decode.exif import EMPTY_METADATA
from daemon.decode.imaging import (
    DEFAULT_FORMATS,
    CorruptImageError,
    DecodedImage,
    ImageError,
    ImageTooLargeError,
    TruncatedImageError,
    UnreadableImageError,
    UnsupportedImageError,
    _upright,
    decode_image,
    load_image,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
ELEPHANTS = "other_animal/african_elephants.jpg"
EXPECTED_ERRORS: dict[str, type[ImageError]] = {
    "README.md": UnsupportedImageError,
    "edge_cases/african_elephants_truncated_file.jpg": TruncatedImageError,
}
RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


# --- helpers -------------------------------------------------------------------------------------


def sample(relative: str) -> Path:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.skip(f"sample {relative} not available")
    return path


def sample_names() -> list[str]:
    if not SAMPLES.is_dir():
        return ["<samples absent>"]
    return sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*") if p.is_file())


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noisy_rgb(size: tuple[int, int]) -> Image.Image:
    """Incompressible content, so that a cut file really lacks image data."""
    return Image.merge("RGB", [Image.effect_noise(size, 64) for _ in range(3)])


def halves(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR announces a huge image, with a few bytes of pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"\x78\x9c")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 header is patched to announce another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def webp_header_claiming(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP header announcing a canvas, with nothing else."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI."""
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    small = (64, 48)
    diff = ImageChops.difference(a.convert("L").resize(small), b.convert("L").resize(small))
    return float(ImageStat.Stat(diff).mean[0])


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def assert_rgb(decoded: DecodedImage) -> None:
    assert decoded.image.mode == "RGB"
    assert decoded.image.width > 0
    assert decoded.image.height > 0


# --- real samples --------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", sample_names())
def test_every_sample_decodes_upright_rgb_or_raises_its_typed_error(relative: str) -> None:
    path = sample(relative)
    expected_error = EXPECTED_ERRORS.get(relative)
    if expected_error is not None:
        with pytest.raises(expected_error) as caught:
            load_image(path)
        assert caught.value.path == str(path)
        return
    decoded = load_image(path)
    assert_rgb(decoded)
    assert decoded.format in DEFAULT_FORMATS
    # Every sample frame is landscape once upright; a missed rotation would show as portrait.
    assert decoded.image.width > decoded.image.height


def test_truncated_sample_keeps_valid_exif_but_refuses_to_decode() -> None:
    path = sample("edge_cases/african_elephants_truncated_file.jpg")
    with pytest.raises(TruncatedImageError, match="truncated") as caught:
        load_image(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_orientation_6_sample_comes_out_upright() -> None:
    original = load_image(sample(ELEPHANTS)).image
    decoded = load_image(sample("edge_cases/african_elephants_with_exif_orientation.jpg"))
    assert decoded.original_size == (1536, 2048)
    assert decoded.image.size == (2048, 1536)
    assert mean_difference(decoded.image, original) < 3
    assert mean_difference(decoded.image.rotate(180), original) > 20


def test_cmyk_sample_comes_out_rgb_with_the_original_colours() -> None:
    original = load_image(sample(ELEPHANTS)).image
    decoded = load_image(sample("edge_cases/african_elephants_cmyk.jpg"))
    assert decoded.image.mode == "RGB"
    for band in range(3):
        diff = ImageChops.difference(
            original.getchannel(band).resize((64, 48)),
            decoded.image.getchannel(band).resize((64, 48)),
        )
        assert ImageStat.Stat(diff).mean[0] < 3  # an inverted CMYK would be far off


def test_grey_mode_l_sample_comes_out_rgb_with_equal_channels() -> None:
    original = load_image(sample(ELEPHANTS)).image
    decoded = load_image(sample("edge_cases/african_elephants_bw.jpg"))
    assert decoded.image.mode == "RGB"
    red, green, blue = decoded.image.split()
    assert ImageChops.difference(red, green).getbbox() is None
    assert ImageChops.difference(red, blue).getbbox() is None
    assert mean_difference(decoded.image, original) < 3


def test_mpo_named_jpg_decodes_its_first_frame() -> None:
    path = sample("edge_cases/sage-grouse-raw.jpg")
    decoded = load_image(path)
    assert decoded.format == "MPO"
    assert decoded.image.size == (1920, 1080)  # frame 1 is a 640x480 preview


def test_mpo_refused_when_only_jpeg_is_accepted() -> None:
    with pytest.raises(UnsupportedImageError, match="MPO"):
        load_image(sample("edge_cases/sage-grouse-raw.jpg"), formats=("JPEG", "PNG"))


def test_sample_metadata_travels_with_the_image() -> None:
    decoded = load_image(sample("other_animal/nacti.jpg"))
    assert decoded.metadata.camera_model == "HC550 HYPERFIRE"


def test_draft_on_a_20_megapixel_sample_keeps_both_sides_at_least_the_draft_size() -> None:
    path = sample("other_animal/snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG")
    decoded = load_image(path, draft_size=224)
    assert decoded.original_size == (5152, 3968)
    assert decoded.image.size == (644, 496)  # 1/8 scale


def test_decoding_samples_in_threads_matches_decoding_them_one_by_one() -> None:
    paths = [sample(name) for name in sample_names() if name.endswith((".jpg", ".JPG"))][:12]
    sequential = [_outcome(path) for path in paths]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(_outcome, paths * 2))
    assert threaded == sequential * 2
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _outcome(path: Path) -> tuple[str, int] | str:
    try:
        decoded = load_image(path, draft_size=224)
    except ImageError as err:
        return type(err).__name__
    return decoded.format, hash(decoded.image.tobytes())


# --- malformed and unusual files -----------------------------------------------------------------


def test_zero_byte_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0001.JPG"
    path.write_bytes(b"")
    with pytest.raises(UnsupportedImageError, match="empty") as caught:
        load_image(path)
    assert caught.value.path == str(path)


def test_random_bytes_named_jpg_are_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "random.jpg"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(UnsupportedImageError):
        load_image(path)


def test_png_named_jpg_decodes_as_png(tmp_path: Path) -> None:
    path = tmp_path / "actually_png.jpg"
    path.write_bytes(encode(halves((40, 20)), "PNG"))
    decoded = load_image(path)
    assert decoded.format == "PNG"
    assert decoded.image.getpixel((5, 10)) == RED


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_formats_not_accepted_are_unsupported(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"frame.{fmt.lower()}"
    path.write_bytes(encode(halves((40, 20)), fmt))
    with pytest.raises(UnsupportedImageError):
        load_image(path)


def test_gif_decodes_when_gif_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "frame.gif"
    path.write_bytes(encode(halves((40, 20)), "GIF"))
    decoded = load_image(path, formats=("GIF",))
    assert decoded.format == "GIF"
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((30, 10)) == BLUE


def test_plain_jpeg_refused_when_only_mpo_is_accepted() -> None:
    data = encode(halves((40, 20)), "JPEG")
    with pytest.raises(UnsupportedImageError, match="JPEG"):
        decode_image(data, name="plain.jpg", formats=("MPO",))


def test_webp_decodes() -> None:
    decoded = decode_image(encode(halves((40, 20)), "WEBP", lossless=True), name="x.webp")
    assert decoded.format == "WEBP"
    assert decoded.image.getpixel((5, 10)) == RED


@pytest.mark.parametrize(
    ("data", "max_pixels"),
    [
        (png_header_claiming(30_000, 30_000), 120_000_000),  # beyond Pillow's own bomb limit
        (png_header_claiming(2_000, 2_000), 1_000_000),
        (jpeg_claiming(30_000, 30_000), 120_000_000),
        (jpeg_claiming(2_000, 2_000), 1_000_000),
        (webp_header_claiming(2_000, 2_000), 1_000_000),
        (webp_header_claiming(16_384, 16_384), 120_000_000),
    ],
    ids=["png-huge", "png-limit", "jpeg-huge", "jpeg-limit", "webp-limit", "webp-huge"],
)
def test_decompression_bomb_headers_are_refused_before_decoding(
    data: bytes, max_pixels: int
) -> None:
    # None of these files holds pixel data: reaching the decoder would raise another error.
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, name="bomb.jpg", max_pixels=max_pixels)
    assert caught.value.path == "bomb.jpg"


def test_max_pixels_is_inclusive() -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    assert decode_image(data, name="x.png", max_pixels=64 * 64).image.size == (64, 64)
    with pytest.raises(ImageTooLargeError, match="4096 pixels"):
        decode_image(data, name="x.png", max_pixels=64 * 64 - 1)


@pytest.mark.parametrize("size", [(1, 2000), (2000, 1), (9, 80)])
def test_a_thin_image_is_refused_from_its_header(size: tuple[int, int]) -> None:
    """A 93-byte 1x2000 PNG took 3 GiB and 2,286 crops: the short side scaled to 224 first."""
    data = encode(Image.new("RGB", size), "PNG")
    with pytest.raises(UnsupportedImageError, match="not a camera frame") as caught:
        decode_image(data, name="thin.png")
    assert caught.value.path == "thin.png"
    assert f"{size[0]}x{size[1]}" in str(caught.value)


def test_a_wide_panorama_within_the_aspect_limit_decodes() -> None:
    data = encode(Image.new("RGB", (800, 100)), "PNG")  # 8:1, the limit itself
    assert decode_image(data, name="pano.png").image.size == (800, 100)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_synthetic_files_are_never_padded(tmp_path: Path, fmt: str) -> None:
    data = encode(noisy_rgb((256, 256)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(TruncatedImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_scan_data_is_a_corrupt_image_error() -> None:
    data = bytearray(encode(noisy_rgb((64, 64)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32  # garbage inside the zlib stream
    with pytest.raises(CorruptImageError):
        decode_image(bytes(data), name="garbled.png")


@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00\x13\x37garbage that is no TIFF header",
        b"Exif\x00\x00MM",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x00",  # first IFD far beyond the segment
    ],
    ids=["garbage", "cut-header", "bad-offset"],
)
def test_corrupt_exif_segment_still_decodes(payload: bytes) -> None:
    # dpi keeps Pillow from parsing (and silently swallowing) the EXIF while opening.
    jpeg = encode(halves((40, 20)), "JPEG", dpi=(300, 300))
    decoded = decode_image(with_app1(jpeg, payload), name="corrupt_exif.jpg")
    assert decoded.image.size == (40, 20)
    assert decoded.metadata == EMPTY_METADATA


@pytest.mark.parametrize("orientation", [0, 9, 255])
def test_invalid_orientation_leaves_the_image_as_stored(orientation: int) -> None:
    data = encode(halves((40, 20)), "JPEG", exif=with_orientation(orientation))
    decoded = decode_image(data, name="odd_orientation.jpg")
    assert decoded.image.size == (40, 20)
    assert rgb_at(decoded.image, (5, 10))[0] > 200  # red still on the left


def test_orientation_guard_logs_and_keeps_the_image(caplog: pytest.LogCaptureFixture) -> None:
    image = halves((40, 20))
    image.info["exif"] = b"Exif\x00\x00not a tiff header at all"
    assert _upright(image, name="trap/IMG_0042.JPG") is image
    assert "trap/IMG_0042.JPG" in caplog.text


def test_orientation_6_turns_the_stored_left_side_to_the_top() -> None:
    data = encode(halves((40, 20)), "PNG", exif=with_orientation(6))
    decoded = decode_image(data, name="rotated.png")
    assert decoded.original_size == (40, 20)
    assert decoded.image.size == (20, 40)
    assert decoded.image.getpixel((10, 5)) == RED
    assert decoded.image.getpixel((10, 35)) == BLUE


# --- modes ---------------------------------------------------------------------------------------


def test_rgba_is_composited_on_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    decoded = decode_image(encode(image, "PNG"), name="alpha.png")
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((1, 0)) == RED
    assert decoded.image.getpixel((2, 0)) == pytest.approx((127, 127, 127), abs=1)


def test_rgba_webp_is_composited_on_white() -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 255, 0))
    decoded = decode_image(encode(image, "WEBP", lossless=True), name="alpha.webp")
    assert decoded.image.getpixel((4, 4)) == WHITE


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1])
    decoded = decode_image(encode(image, "PNG", transparency=0), name="palette.png")
    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((1, 0)) == BLUE


def test_grey_with_alpha_is_composited_on_white() -> None:
    image = Image.new("LA", (2, 1))
    image.putdata([(50, 0), (50, 255)])
    decoded = decode_image(encode(image, "PNG"), name="la.png")
    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((1, 0)) == (50, 50, 50)


def test_rgb_with_transparent_colour_is_composited_on_white() -> None:
    image = Image.new("RGB", (2, 1), (0, 0, 0))
    image.putpixel((1, 0), RED)
    decoded = decode_image(encode(image, "PNG", transparency=(0, 0, 0)), name="trns.png")
    assert decoded.image.getpixel((0, 0)) == WHITE
    assert decoded.image.getpixel((1, 0)) == RED


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    image = Image.new("I;16", (3, 1))
    for x, value in enumerate((0, 32768, 65535)):
        image.putpixel((x, 0), value)
    decoded = decode_image(encode(image, "PNG"), name="sixteen.png")
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((0, 0)) == (0, 0, 0)
    assert decoded.image.getpixel((1, 0)) == (128, 128, 128)
    assert decoded.image.getpixel((2, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "fmt", "colour"),
    [("1", "PNG", 1), ("L", "PNG", 200), ("P", "PNG", 3), ("CMYK", "JPEG", (0, 0, 0, 0))],
)
def test_other_modes_come_out_rgb(mode: str, fmt: str, colour: int | tuple[int, ...]) -> None:
    decoded = decode_image(encode(Image.new(mode, (16, 16), colour), fmt), name=f"m.{fmt}")
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (16, 16)


# --- draft ---------------------------------------------------------------------------------------


def test_draft_decodes_a_12_megapixel_jpeg_at_one_eighth() -> None:
    data = encode(Image.new("RGB", (4000, 3000), (10, 120, 30)), "JPEG")
    decoded = decode_image(data, name="big.jpg", draft_size=224)
    assert decoded.original_size == (4000, 3000)
    assert decoded.image.size == (500, 375)
    assert decoded.image.mode == "RGB"


def test_draft_keeps_the_shorter_side_at_least_the_draft_size() -> None:
    data = encode(Image.new("RGB", (3000, 448)), "JPEG")
    decoded = decode_image(data, name="panorama.jpg", draft_size=224)
    assert decoded.image.size == (1500, 224)


def test_draft_and_orientation_together() -> None:
    data = encode(halves((4000, 3000)), "JPEG", exif=with_orientation(6))
    decoded = decode_image(data, name="rotated_big.jpg", draft_size=224)
    assert decoded.original_size == (4000, 3000)
    assert decoded.image.size == (375, 500)
    assert rgb_at(decoded.image, (187, 20))[0] > 200  # stored left (red) is now on top
    assert rgb_at(decoded.image, (187, 480))[2] > 200


def test_draft_is_ignored_for_png() -> None:
    data = encode(Image.new("RGB", (1000, 800)), "PNG")
    assert decode_image(data, name="x.png", draft_size=224).image.size == (1000, 800)


def test_draft_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draft_size"):
        decode_image(b"\xff\xd8", name="x.jpg", draft_size=0)


# --- operating-system errors and messages --------------------------------------------------------


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "gone.jpg"
    with pytest.raises(UnreadableImageError) as caught:
        load_image(path)
    assert caught.value.path == str(path)
    assert str(caught.value) == f"{path}: {caught.value.reason}"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "DCIM.jpg"
    folder.mkdir()
    with pytest.raises(UnreadableImageError):
        load_image(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(encode(halves((8, 8)), "JPEG"))
    path.chmod(0)
    try:
        with pytest.raises(UnreadableImageError, match="ermission"):
            load_image(path)
    finally:
        path.chmod(0o600)


def test_error_message_is_path_then_reason(tmp_path: Path) -> None:
    path = tmp_path / "trap 07" / "IMG_0042.JPG"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xd8\xff" + os.urandom(100))
    with pytest.raises(ImageError) as caught:
        load_image(path)
    error = caught.value
    assert error.path == str(path)
    assert error.reason
    assert str(error) == f"{path}: {error.reason}"


@pytest.mark.parametrize(
    "error_type",
    [
        UnsupportedImageError,
        TruncatedImageError,
        ImageTooLargeError,
        UnreadableImageError,
        CorruptImageError,
    ],
)
def test_errors_survive_pickling(error_type: type[ImageError]) -> None:
    error = error_type("/inbox/IMG_0001.JPG", "some reason")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_type
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))
