"""Synthetic camera-trap frames: 12 MP JPEGs with EXIF and an info strip, made once and cached."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image, ImageDraw, ImageFont

from bench.harness import say

FRAME_SEED = 7_000_000


FULL_FRAME_SIZE = (4000, 3000)


QUICK_FRAME_SIZE = (640, 480)


JPEG_QUALITY = 90


FloatArray = npt.NDArray[np.float32]


def _fractal_noise(
    rng: np.random.Generator, width: int, height: int, cells: Sequence[int]
) -> FloatArray:
    """Smooth noise: random grids of `cells` columns upscaled bicubically, summed, unit std."""
    total = np.zeros((height, width), np.float32)
    for octave, columns in enumerate(cells):
        rows = max(2, round(columns * height / width))
        grid = rng.standard_normal((rows, columns)).astype(np.float32)
        upscaled = Image.fromarray(grid, "F").resize((width, height), Image.Resampling.BICUBIC)
        total += np.asarray(upscaled, np.float32) / (1 + octave)
    return total / (float(total.std()) + 1e-6)


def _scene_colours(rng: np.random.Generator, *, night: bool) -> tuple[FloatArray, FloatArray]:
    """Top (sky, canopy) and bottom (ground) colours; night IR frames are grey stored as RGB."""
    if night:
        top, bottom = rng.uniform(50, 110), rng.uniform(90, 170)
        return np.full(3, top, np.float32), np.full(3, bottom, np.float32)
    sky = rng.uniform(140, 210) * np.array([0.92, 0.97, 1.05], np.float32)
    ground = rng.uniform([60, 70, 30], [130, 125, 80]).astype(np.float32)
    return sky, ground


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Gradient + low-frequency blobs + vertical grass streaks at 1/4 size, then sensor grain."""
    small_w, small_h = max(8, width // 4), max(8, height // 4)
    night = bool(rng.random() < 0.33)
    top, bottom = _scene_colours(rng, night=night)
    rows = np.linspace(0.0, 1.0, small_h, dtype=np.float32)[:, None, None]
    rgb = (top * (1 - rows) + bottom * rows) * np.ones((1, small_w, 1), np.float32)
    rgb *= 1 + 0.3 * _fractal_noise(rng, small_w, small_h, (3, 10, 40, 160))[..., None]
    if not night:
        for channel in range(3):
            rgb[..., channel] += 8 * _fractal_noise(rng, small_w, small_h, (2, 6))
    streaks = rng.standard_normal((max(2, small_h // 12), small_w)).astype(np.float32)
    streaks_up = Image.fromarray(streaks, "F").resize((small_w, small_h), Image.Resampling.BILINEAR)
    rgb += (18 * np.asarray(streaks_up, np.float32) * rows[..., 0])[..., None]
    small = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    full = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), np.int16)
    grain = rng.standard_normal((height, width, 1), dtype=np.float32) * 3.0
    return Image.fromarray(np.clip(full + grain.astype(np.int16), 0, 255).astype(np.uint8), "RGB")


def _stamp(index: int) -> tuple[str, str]:
    """A capture time per frame: (EXIF form, strip form), a minute apart from 2024-01-15."""
    day, minute = divmod(index, 24 * 60)
    clock = f"{minute // 60:02d}:{minute % 60:02d}:{index % 60:02d}"
    date = f"2024-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"
    return f"{date.replace('-', ':')} {clock}", f"{date} {clock}"


def _info_strip(canvas: Image.Image, top: int, index: int, strip_text_date: str) -> None:
    """The black bar with camera name, temperature and time that camera traps burn in."""
    strip = canvas.height - top
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, int(strip * 0.6)))
    text = f"TW-CAM{index % 12:02d}   {index % 30 - 10:+d}C   {strip_text_date}   {index:05d}"
    draw.text((strip // 2, top + strip // 5), text, fill=(255, 255, 255), font=font)


def synthetic_frame(index: int, size: tuple[int, int], quality: int) -> bytes:
    """A camera-trap-like JPEG, different for each index, with EXIF Make/Model/DateTimeOriginal."""
    rng = np.random.default_rng(FRAME_SEED + index)
    width, height = size
    strip = max(12, height // 28)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(_scene(rng, width, height - strip), (0, 0))
    exif_time, strip_time = _stamp(index)
    _info_strip(canvas, height - strip, index, strip_time)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TIGERWATCH"
    exif[ExifTags.Base.Model] = "SYNTHETIC BENCH"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = exif_time
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


def _write_frame(job: tuple[int, tuple[int, int], Path]) -> None:
    index, size, path = job
    partial = path.with_suffix(".partial")
    partial.write_bytes(synthetic_frame(index, size, JPEG_QUALITY))
    partial.rename(path)  # a killed run leaves no half-written frame under the final name


def ensure_frames(cache_dir: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """Frames 0..count-1, generated in parallel on first use and cached."""
    folder = cache_dir / "frames" / f"{size[0]}x{size[1]}-q{JPEG_QUALITY}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"frame_{index:05d}.jpg" for index in range(count)]
    missing = [(i, size, path) for i, path in enumerate(paths) if not path.exists()]
    if missing:
        say(f"generating {len(missing)} synthetic {size[0]}x{size[1]} frames in {folder} ...")
        started = time.perf_counter()
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_write_frame, missing, chunksize=4))
        say(f"  done in {time.perf_counter() - started:.0f} s")
    return paths
