"""Tests for daemon.decode.exif: real cameras' quirks and corrupt EXIF that must never raise."""

from __future__ import annotations

import struct
from datetime import datetime
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from daemon.decode.exif import (
    EMPTY_METADATA,
    Camera,
    CameraMetadata,
    clean_text,
    normalised_camera,
    parse_exif_datetime,
    read_metadata,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
MAKE, MODEL, SOFTWARE, DATETIME = 0x010F, 0x0110, 0x0131, 0x0132
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004
ASCII, SLONG = 2, 9  # TIFF field types


def open_sample(relative: str) -> Image.Image:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.skip(f"sample {relative} not available")
    return Image.open(path)


def jpeg_with_exif(exif: Image.Exif | bytes) -> Image.Image:
    """A real JPEG round trip; dpi stops Pillow from pre-parsing (and hiding) bad EXIF on open."""
    buffer = BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "JPEG", exif=exif, dpi=(72, 72))
    buffer.seek(0)
    return Image.open(buffer)


def exif_with(base: dict[int, object], sub: dict[int, object] | None = None) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in base.items():
        exif[tag] = value
    for tag, value in (sub or {}).items():
        exif.get_ifd(EXIF_IFD)[tag] = value
    return exif


# --- real samples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        (
            "other_animal/nacti.jpg",
            CameraMetadata(datetime(2016, 2, 20, 8, 13, 15), "RECONYX", "HC550 HYPERFIRE", None),
        ),
        (
            "other_animal/S1_D04_R6_PICT0128.JPG",
            CameraMetadata(datetime(2010, 8, 23, 11, 20, 43), None, None, "DL560PBNx02020"),
        ),
        (
            "other_animal/snapshot_serengeti_S5_U10_U10_R4_S5_U10_R4_IMAG3595.JPG",
            CameraMetadata(
                datetime(2012, 12, 17, 12, 18, 46), "BolyMedia", "SG565FV", "V2.10.02(HW-2)"
            ),
        ),
        (
            "night_ir/missouri_camera_traps_Set1_1.02-Agouti_SEQ89823_SEQ89823_IMG_0002.JPG",
            CameraMetadata(datetime(2011, 1, 24, 7, 56, 5), "Reconyx", "RC55 RAPIDFIRE", None),
        ),
        (
            "night_ir/orinoquia-thumb-web.jpg",
            CameraMetadata(datetime(2020, 3, 28, 21, 47, 42), "BUSHNELL", None, "BS686BWNx14241"),
        ),
        (
            # A scanned film print: only DateTimeOriginal, no IFD0 DateTime.
            "other_animal/ocelot.jpg",
            CameraMetadata(datetime(2006, 2, 10, 17, 6, 43), "HP", "HP ScanJet 4070", None),
        ),
        (
            "other_animal/snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG",
            CameraMetadata(datetime(2018, 6, 18, 16, 21, 20), "CUDDEBACK", "C2", "1200 FW 6.0.0"),
        ),
        (
            "edge_cases/african_elephants_truncated_file.jpg",
            CameraMetadata(datetime(2010, 8, 4, 8, 43, 15), None, None, "4580BWDLx0200B"),
        ),
        (
            "edge_cases/sage-grouse-raw.jpg",
            CameraMetadata(datetime(2023, 6, 20, 13, 9, 4), "BUSHNELL", None, "BS686BWNx14239"),
        ),
        ("empty/empty.jpg", EMPTY_METADATA),
        ("tiger/anno_1440.jpg", EMPTY_METADATA),
        ("other_animal/wcs_camera_traps_animals_0090_1439.jpg", EMPTY_METADATA),
    ],
)
def test_sample_metadata(relative: str, expected: CameraMetadata) -> None:
    with open_sample(relative) as image:
        assert read_metadata(image, name=relative) == expected


def test_no_nul_bytes_or_padding_survive_in_any_sample() -> None:
    if not SAMPLES.is_dir():
        pytest.skip("samples not available")
    for path in sorted(SAMPLES.rglob("*.[jJ][pP][gG]")):
        with Image.open(path) as image:
            metadata = read_metadata(image, name=str(path))
        for text in (metadata.camera_make, metadata.camera_model, metadata.software):
            assert text is None or (text == text.strip() and "\x00" not in text and text)


def test_reconyx_spellings_compare_equal_case_insensitively() -> None:
    with (
        open_sample("other_animal/nacti.jpg") as upper,
        open_sample(
            "night_ir/missouri_camera_traps_Set1_1.02-Agouti_SEQ89823_SEQ89823_IMG_0002.JPG"
        ) as mixed,
    ):
        first = read_metadata(upper, name="nacti").camera_make
        second = read_metadata(mixed, name="missouri").camera_make
    assert first is not None and second is not None
    assert first != second
    assert first.casefold() == second.casefold()


# --- normalised camera names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("other_animal/nacti.jpg", Camera("reconyx", "hc550 hyperfire")),  # Model NUL-padded
        (
            # 'Reconyx  ' and 'RC55 RAPIDFIRE' + 15 NULs
            "night_ir/missouri_camera_traps_Set1_1.02-Agouti_SEQ89823_SEQ89823_IMG_0002.JPG",
            Camera("reconyx", "rc55 rapidfire"),
        ),
        (
            "other_animal/snapshot_serengeti_S5_U10_U10_R4_S5_U10_R4_IMAG3595.JPG",
            Camera("bolymedia", "sg565fv"),  # both space-padded
        ),
        # 7 NUL bytes in each; Software 'DL560PBNx02020' names the camera.
        ("other_animal/S1_D04_R6_PICT0128.JPG", Camera("covert", "dl560pbn")),
        # Make BUSHNELL, Model 19 NULs, Software 'BS686BWNx14241'.
        ("night_ir/orinoquia-thumb-web.jpg", Camera("bushnell", "bs686bwn")),
        ("empty/blank3.jpg", Camera("bushnell", "bs682bwn")),  # NULs; Software 'BS682BWNx0110E'
        ("other_animal/african_elephants.jpg", Camera(None, "4580bwdl")),  # a vendor not known
        (
            "other_animal/snapshot_kruger_KRU_S1_25_25_R1_KRU_S1_25_R1_IMAG0012.JPG",
            Camera("cuddeback", "c2"),  # Software '1200 FW 6.0.0' is no model: not used
        ),
        ("other_animal/idaho-camera-traps.jpg", Camera("reconyx", "ultrafire")),
        ("empty/empty.jpg", Camera(None, None)),
    ],
)
def test_sample_cameras_are_normalised(relative: str, expected: Camera) -> None:
    with open_sample(relative) as image:
        assert normalised_camera(read_metadata(image, name=relative)) == expected


def test_a_swapped_make_and_model_are_put_back() -> None:
    exif = exif_with({MAKE: "Ambush IR", MODEL: "CUDDEBACK\x00\x00"})
    camera = normalised_camera(read_metadata(jpeg_with_exif(exif), name="x"))
    assert camera == Camera("cuddeback", "ambush ir")
    assert camera.name == "cuddeback ambush ir"


def test_a_vendor_name_in_both_fields_is_left_as_written() -> None:
    exif = exif_with({MAKE: "RECONYX", MODEL: "Reconyx"})
    assert normalised_camera(read_metadata(jpeg_with_exif(exif), name="x")) == Camera(
        "reconyx", "reconyx"
    )


def test_software_names_the_camera_only_when_model_is_empty() -> None:
    exif = exif_with({MAKE: "BUSHNELL", MODEL: "119876", SOFTWARE: "BS686BWNx14241"})
    assert normalised_camera(read_metadata(jpeg_with_exif(exif), name="x")) == Camera(
        "bushnell", "119876"
    )
    assert Camera(None, None).name is None
    assert Camera(None, "dl560pbn").name == "dl560pbn"


# --- capture time --------------------------------------------------------------------------------


def test_datetime_original_wins_over_digitized_and_datetime() -> None:
    exif = exif_with(
        {DATETIME: "2001:01:01 00:00:00"},
        {DATETIME_ORIGINAL: "2020:05:06 07:08:09", DATETIME_DIGITIZED: "2019:01:01 00:00:00"},
    )
    assert read_metadata(jpeg_with_exif(exif), name="x").capture_time == datetime(
        2020, 5, 6, 7, 8, 9
    )


def test_unusable_original_falls_back_to_digitized_then_datetime() -> None:
    digitized = exif_with(
        {DATETIME: "2001:01:01 00:00:00"},
        {DATETIME_ORIGINAL: "0000:00:00 00:00:00", DATETIME_DIGITIZED: "2019:02:03 04:05:06"},
    )
    assert read_metadata(jpeg_with_exif(digitized), name="x").capture_time == datetime(
        2019, 2, 3, 4, 5, 6
    )
    only_base = exif_with({DATETIME: "2001:01:01 10:11:12"}, {DATETIME_ORIGINAL: "garbage"})
    assert read_metadata(jpeg_with_exif(only_base), name="x").capture_time == datetime(
        2001, 1, 1, 10, 11, 12
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2016:02:20 08:13:15", datetime(2016, 2, 20, 8, 13, 15)),
        ("2016:02:20 08:13:15\x00", datetime(2016, 2, 20, 8, 13, 15)),
        ("  2016-02-20  08:13:15 ", datetime(2016, 2, 20, 8, 13, 15)),
        ("2016/02/20 8:13:15", datetime(2016, 2, 20, 8, 13, 15)),
        (b"2016:02:20 08:13:15", datetime(2016, 2, 20, 8, 13, 15)),
        ("1990:01:01 00:00:00", datetime(1990, 1, 1)),
        ("2100:12:31 23:59:59", datetime(2100, 12, 31, 23, 59, 59)),
        ("1989:12:31 23:59:59", None),
        ("2101:01:01 00:00:00", None),
        ("1970:01:01 00:00:00", None),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("2016:13:20 08:13:15", None),
        ("2016:02:30 08:13:15", None),
        ("2016:02:20 24:00:00", None),
        ("2016:02:20", None),
        ("", None),
        ("\x00" * 20, None),
        (None, None),
        (20160220, None),
    ],
)
def test_parse_exif_datetime(text: object, expected: datetime | None) -> None:
    assert parse_exif_datetime(text) == expected


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HC550 HYPERFIRE\x00\x00\x00\x00", "HC550 HYPERFIRE"),
        ("BolyMedia                      ", "BolyMedia"),
        ("\x00" * 7, None),
        (b"RECONYX\x00\x00", "RECONYX"),
        ("  Ambush \t Professional\r\n", "Ambush Professional"),
        ("", None),
        ("   ", None),
        ((1, 2, 3), None),
        (None, None),
    ],
)
def test_clean_text(value: object, expected: str | None) -> None:
    assert clean_text(value) == expected


def test_make_model_software_are_cleaned() -> None:
    exif = exif_with({MAKE: "\x00" * 7, MODEL: "SG565FV        ", SOFTWARE: "DL560PBNx02020\x00"})
    metadata = read_metadata(jpeg_with_exif(exif), name="x")
    assert (metadata.camera_make, metadata.camera_model, metadata.software) == (
        None,
        "SG565FV",
        "DL560PBNx02020",
    )


# --- corrupt EXIF never raises -------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00\x13\x37 not a TIFF header",
        b"Exif\x00\x00MM",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x00",
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff",  # 65535 entries announced, none there
        b"Exif\x00\x00" + bytes(range(256)) * 4,
    ],
    ids=["garbage", "cut-header", "bad-offset", "huge-count", "noise"],
)
def test_corrupt_exif_gives_empty_metadata(payload: bytes) -> None:
    assert read_metadata(jpeg_with_exif(payload), name="x.jpg") == EMPTY_METADATA


def test_corrupt_exif_logs_a_warning_naming_the_file(caplog: pytest.LogCaptureFixture) -> None:
    image = jpeg_with_exif(b"Exif\x00\x00\x13\x37 not a TIFF header")
    with caplog.at_level("WARNING", logger="daemon.decode.exif"):
        assert read_metadata(image, name="inbox/cam3/IMG_0042.JPG") == EMPTY_METADATA
    assert "inbox/cam3/IMG_0042.JPG" in caplog.text


def test_exif_info_that_is_not_bytes_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    image = Image.new("RGB", (4, 4))
    image.info["exif"] = 12345  # what a buggy plugin or caller could leave behind
    assert read_metadata(image, name="odd.png") == EMPTY_METADATA
    assert "odd.png" in caplog.text


def raw_exif(entries: list[tuple[int, int, bytes]]) -> bytes:
    """A little-endian EXIF segment built by hand: (tag, TIFF type, raw value) per entry."""
    data_offset = 8 + 2 + 12 * len(entries) + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, value in entries:
        count = len(value) if kind == ASCII else 1
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", data_offset + len(extra))
            extra += value
        ifd += struct.pack("<HHI", tag, kind, count) + field
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + extra


def with_negative_pointer(pointer_tag: int) -> Image.Image:
    """Make and DateTime fine, but a sub-IFD pointer that makes Pillow seek to -16."""
    return jpeg_with_exif(
        raw_exif(
            [
                (MAKE, ASCII, b"RECONYX\x00"),
                (DATETIME, ASCII, b"2016:02:20 08:13:15\x00"),
                (pointer_tag, SLONG, struct.pack("<i", -16)),
            ]
        )
    )


def test_corrupt_exif_sub_ifd_keeps_the_main_tags(caplog: pytest.LogCaptureFixture) -> None:
    metadata = read_metadata(with_negative_pointer(EXIF_IFD), name="cam1/IMG_0007.JPG")
    assert metadata.camera_make == "RECONYX"
    assert metadata.capture_time == datetime(2016, 2, 20, 8, 13, 15)
    assert "cam1/IMG_0007.JPG" in caplog.text


def test_unreadable_gps_ifd_keeps_the_main_tags() -> None:
    metadata = read_metadata(with_negative_pointer(GPS_IFD), name="cam1/IMG_0008.JPG")
    assert metadata.camera_make == "RECONYX"


def test_image_without_exif_gives_empty_metadata() -> None:
    assert read_metadata(Image.new("RGB", (4, 4)), name="plain") == EMPTY_METADATA


def test_exif_in_png_and_webp_is_read() -> None:
    exif = exif_with({MAKE: "RECONYX"}, {DATETIME_ORIGINAL: "2016:02:20 08:13:15"})
    for fmt in ("PNG", "WEBP"):
        buffer = BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, fmt, exif=exif)
        buffer.seek(0)
        with Image.open(buffer) as image:
            image.load()
            metadata = read_metadata(image, name=f"x.{fmt}")
        assert metadata.camera_make == "RECONYX"
        assert metadata.capture_time == datetime(2016, 2, 20, 8, 13, 15)
