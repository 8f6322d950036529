"""Tests for daemon.decode.header: format, size and completeness read from a file's structure."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from daemon.decode.header import ImageHeader, looks_complete, read_header
from tests.faults.fault_kit import noise_jpeg


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _judge(tmp_path: Path, data: bytes) -> tuple[bool, ImageHeader | None]:
    path = tmp_path / "probe"
    path.write_bytes(data)
    with path.open("rb") as stream:
        return looks_complete(stream), read_header(stream)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_every_cut_of_an_image_is_incomplete_and_the_whole_is_complete(
    tmp_path: Path, fmt: str
) -> None:
    data = _saved(Image.new("RGB", (90, 60), (10, 120, 30)), fmt)
    cuts = sorted({0, 1, 2, 3, 12, 30, len(data) // 3, len(data) // 2, len(data) - 1})
    assert [cut for cut in cuts if _judge(tmp_path, data[:cut])[0]] == []
    complete, header = _judge(tmp_path, data)
    assert complete
    assert header == ImageHeader(fmt, 90, 60, weight=4 if fmt == "WEBP" else 1)


def test_a_jpeg_with_data_after_its_end_marker_is_complete(tmp_path: Path) -> None:
    # BolyMedia cameras append vendor data after FF D9; padding with NULs is seen too.
    jpeg = noise_jpeg(1)
    assert _judge(tmp_path, jpeg + b"LS13..\t: 1\t255\r\n" * 500)[0]
    assert _judge(tmp_path, jpeg + b"\x00" * 4096)[0]


def test_the_end_marker_of_an_exif_thumbnail_does_not_make_a_cut_file_complete(
    tmp_path: Path,
) -> None:
    thumbnail = noise_jpeg(2, size=(16, 16))
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    jpeg = noise_jpeg(3, size=(320, 240))
    data = jpeg[:2] + app1 + jpeg[2:]
    assert _judge(tmp_path, data)[0]
    assert not _judge(tmp_path, data[: len(data) * 3 // 4])[0]


def test_files_that_are_no_image_are_left_to_the_decoder(tmp_path: Path) -> None:
    assert _judge(tmp_path, b"GIF89a" + b"\x00" * 40) == (True, None)
    assert _judge(tmp_path, b"\xff\xd8" + b"garbage, no markers") == (True, None)


def test_the_sample_photos_are_complete_except_the_truncated_one(samples_dir: Path) -> None:
    verdicts = {}
    for path in sorted(samples_dir.glob("*/*.[jJ][pP][gG]")):
        with path.open("rb") as stream:
            verdicts[path.name] = looks_complete(stream)
    incomplete = [name for name, complete in verdicts.items() if not complete]
    assert incomplete == ["african_elephants_truncated_file.jpg"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_header_cut_short_anywhere_reads_as_no_header(tmp_path: Path, fmt: str) -> None:
    # An FTP upload cut after 20 bytes: the parser must answer, never raise (a raise in the
    # daemon's decode feeder once ended the worker on every start).
    data = _saved(Image.new("RGBA", (90, 60), (10, 120, 30, 200)), fmt)
    if fmt == "WEBP":  # a lossless stream's header (the reviewer's 17-byte stub)
        data = data[:12] + b"VP8L" + bytes(24)
    raised = []
    for cut in range(len(data[:40])):
        try:
            _judge(tmp_path, data[:cut])
        except Exception as err:  # the figure is which cuts raise
            raised.append((cut, repr(err)))
    print(f"{fmt}: cuts 0..39 that raised: {raised}")
    assert raised == []
