"""Small helpers shared by the watcher-death, clock-jump, SIGTERM and hostile-name fault tests."""

from __future__ import annotations

import hashlib
import io
import random
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from PIL import Image

from tests.daemon_support import Station, migrated, query, wait_for

# Generous ceilings for polling: a loaded 2-core machine must not make the tests flaky.
SETTLE_TIMEOUT = 60.0
PROCESS_START_TIMEOUT = 120.0


def noise_jpeg(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG of random pixels: a distinct content for every seed."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a COM segment: other bytes, same pixels, same decoding cost."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def write_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT, **kwargs: float
) -> None:
    assert wait_for(predicate, timeout, **kwargs), f"timed out after {timeout} s waiting for {what}"


def scalar(station: Station, sql: str, *params: object) -> int:
    """One integer from the database; 0 while the schema does not exist yet."""
    if not migrated(station):
        return 0
    value = query(station, sql, *params)[0][0]
    assert isinstance(value, int), value
    return value


def count(station: Station, table: str) -> int:
    return scalar(station, f"SELECT count(*) FROM {table}")


def done_paths(station: Station) -> set[str]:
    """Inbox paths whose image row is finished."""
    if not migrated(station):
        return set()
    rows = query(station, "SELECT original_path FROM images WHERE state = 'done'")
    return {str(row[0]) for row in rows}


def has_row(station: Station, path: Path) -> bool:
    """True when an image row was made for this inbox path."""
    if not migrated(station):
        return False
    return bool(query(station, "SELECT 1 FROM images WHERE original_path = ?", str(path)))


def row_done(station: Station, path: Path) -> bool:
    return str(path) in done_paths(station)


def report(title: str, figures: Mapping[str, object]) -> None:
    """One clear block of figures per test (visible with pytest -s) for the closing notes."""
    width = max(len(name) for name in figures)
    lines = [f"[fault] {title}"]
    lines += [f"    {name:<{width}} : {value}" for name, value in figures.items()]
    print("\n" + "\n".join(lines))
