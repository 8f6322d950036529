"""Read an image file's format, pixel size and completeness from its structure, not decoding it."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"
_SIGNATURES = (JPEG_SOI, PNG_SIGNATURE, b"RIFF")
_PNG_ALPHA_TYPES = frozenset({4, 6})  # grey + alpha, RGB + alpha
_WIDE_PNG_WEIGHT = 3  # RGBA PNG measured at 12 bytes per pixel, 16-bit grey at 7
_WEBP_WEIGHT = 4  # measured at 16 bytes per pixel
_SOS = 0xDA
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length field
_CHUNK = 1 << 20
_TAIL = 4096  # how far from the end the marker is looked for before a full scan
_MAX_SEGMENTS = 4096  # a corrupt file must not make us walk forever


class _File(Protocol):
    """An open file: read by offset (pread), so its position does not matter."""

    def fileno(self) -> int: ...


@dataclass(frozen=True)
class ImageHeader:
    """What the first bytes of a file say: its format and stored size, when it is one we know."""

    format: str  # "JPEG" (also MPO), "PNG" or "WEBP"
    width: int
    height: int
    # Peak decoder memory per pixel relative to a plain RGB PNG (about 4.3 bytes), measured:
    # RGBA or 16-bit PNGs are converted through wider modes, Pillow decodes WebP to RGBA copies.
    weight: int = 1


def jpeg_segments(stream: _File) -> Iterator[tuple[int, int, bytes]]:
    """(marker, offset after the segment, first 8 payload bytes) for each segment up to SOS.

    Stops early, quietly, at the end of the data or at bytes that are no marker; the caller
    tells a complete walk from an early stop by seeing the SOS marker (0xDA).
    """
    position = 2  # after SOI
    for _ in range(_MAX_SEGMENTS):
        head = _read_at(stream, position, 4)
        if len(head) < 2 or head[0] != 0xFF:
            return
        marker = head[1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if len(head) < 4:
            return
        (length,) = struct.unpack(">H", head[2:4])
        end = position + 2 + length
        yield marker, end, _read_at(stream, position + 4, min(8, max(length - 2, 0)))
        if marker == _SOS:
            return
        position = end


def read_header(stream: _File) -> ImageHeader | None:
    """The format and stored size from the header, or None for anything else or a short file."""
    try:
        return _parse_header(stream)
    except (struct.error, IndexError):
        return None  # a header cut short (an FTP upload cut after 20 bytes) is no header


def _parse_header(stream: _File) -> ImageHeader | None:
    head = _read_at(stream, 0, 30)
    if head.startswith(JPEG_SOI):
        return _jpeg_header(stream)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        bit_depth, colour_type = head[24], head[25]
        wide = colour_type in _PNG_ALPHA_TYPES or bit_depth == 16
        return ImageHeader("PNG", width, height, weight=_WIDE_PNG_WEIGHT if wide else 1)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
        return None if size is None else ImageHeader("WEBP", *size, weight=_WEBP_WEIGHT)
    return None


def _jpeg_header(stream: _File) -> ImageHeader | None:
    for marker, _, payload in jpeg_segments(stream):
        if marker in _SOF_MARKERS and len(payload) >= 5:
            height, width = struct.unpack(">HH", payload[1:5])
            return ImageHeader("JPEG", width, height)
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def looks_complete(stream: _File) -> bool:
    """False for a JPEG, PNG or WebP whose data stops before its end marker (an upload still
    under way); True for a complete one, and for anything else (the decoder judges that).

    A JPEG counts as complete when FF D9 (EOI) follows its first scan: inside entropy-coded data
    an FF byte is always stuffed, so that pair is the end marker, wherever trailing vendor data
    (BolyMedia appends 71 KB after it) or padding puts it. The EOI of an EXIF thumbnail comes
    before the scan and does not count.
    """
    head = _read_at(stream, 0, 12)
    if head.startswith(JPEG_SOI):
        return _jpeg_complete(stream)
    if head.startswith(PNG_SIGNATURE):
        return _png_complete(stream)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        return _size(stream) >= declared
    if len(head) >= 12:
        return True
    # Empty, or a header cut short: nothing decodable yet.
    return not any(sign.startswith(head) or head.startswith(sign) for sign in _SIGNATURES)


def _jpeg_complete(stream: _File) -> bool:
    scan_start = None
    for marker, end, _ in jpeg_segments(stream):
        if marker == _SOS:
            scan_start = end
    if scan_start is None:
        return _size(stream) > 2 and _has_bytes_after_headers(stream)
    # Most files end with the marker (padding aside): one small read instead of a full scan.
    tail_start = max(scan_start, _size(stream) - _TAIL)
    if _read_at(stream, tail_start, _TAIL).rstrip(b"\x00\xff").endswith(JPEG_EOI):
        return True
    return _find_from(stream, JPEG_EOI, scan_start)


def _has_bytes_after_headers(stream: _File) -> bool:
    """A walk that stopped before any scan: complete only when it hit non-marker bytes, which
    is corruption for the decoder to report, not the end of the data."""
    last_end = 2
    for _, end, _ in jpeg_segments(stream):
        last_end = end
    head = _read_at(stream, last_end, 2)
    return len(head) == 2 and head[0] != 0xFF


def _png_complete(stream: _File) -> bool:
    position = len(PNG_SIGNATURE)
    for _ in range(1 << 20):
        head = _read_at(stream, position, 8)
        if len(head) < 8:
            return False
        length = int.from_bytes(head[:4], "big")
        position += 12 + length
        if head[4:8] == _PNG_IEND:
            return _size(stream) >= position
    return True


def _find_from(stream: _File, needle: bytes, start: int) -> bool:
    """Whether `needle` occurs at or after `start`, reading in chunks (C-speed search)."""
    position = start
    carry = b""
    while chunk := _read_at(stream, position, _CHUNK):
        if needle in carry + chunk:
            return True
        carry = chunk[-(len(needle) - 1) :]
        position += len(chunk)
    return False


def _read_at(stream: _File, offset: int, count: int) -> bytes:
    return os.pread(stream.fileno(), count, offset) if count > 0 else b""


def _size(stream: _File) -> int:
    return os.fstat(stream.fileno()).st_size
