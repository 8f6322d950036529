"""Throughput benchmark: the notebook's way, the daemon end to end, and the classifier alone.

Run from the repository root:

    .venv/bin/python -m bench.throughput                 # full run (ViT-B/32-sized random CLIP)
    .venv/bin/python -m bench.throughput --quick         # smoke run, tiny model, < 60 s

Generated models and frames are cached in bench/out/ (gitignored) between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import io
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import PIL
import psutil  # type: ignore[import-untyped]
import torch
import transformers
import yaml
from PIL import ExifTags, Image, ImageDraw, ImageFont
from transformers import CLIPModel, CLIPProcessor
from transformers.utils import logging as transformers_logging

from daemon.classify.classifier import ClipClassifier
from daemon.classify.precision import PRECISIONS, Precision
from daemon.config import DEFAULT_LABELS, Model
from daemon.decode.imaging import ImageError, decode_image
from scripts.make_test_model import build_test_model

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / "bench" / "out"
SAMPLES_DIR = REPO_ROOT.parent / "shared" / "samples"
SAMPLE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})

LABELS: tuple[str, ...] = tuple(label.text for label in DEFAULT_LABELS)
TARGETS: tuple[bool, ...] = tuple(label.target for label in DEFAULT_LABELS)

FRAME_SEED = 7_000_000
FULL_FRAME_SIZE = (4000, 3000)
QUICK_FRAME_SIZE = (640, 480)
JPEG_QUALITY = 90
DRAFT_SIZE = 224  # the daemon drafts JPEGs to the model's input size

RSS_POLL_SECONDS = 0.05
DB_POLL_SECONDS = 0.05
READY_TIMEOUT_SECONDS = 300.0
STOP_TIMEOUT_SECONDS = 60.0
IDLE_PAUSE_SECONDS = 2.0  # lets the worker fall idle before the single-file drop
SINGLE_FILE_TARGET_SECONDS = 3.0  # the bound, after the quiet period
MAX_BATCH_SIZE = 256  # model.batch_size's upper bound in daemon.config
MIB = 1024 * 1024

FloatArray = npt.NDArray[np.float32]


class BenchmarkError(Exception):
    """A measurement could not be made; the message says which and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Settings:
    frames: int
    notebook_frames: int
    precision: Precision
    batch_size: int
    quiet_seconds: float
    speed_seconds: float
    samples_limit: int | None
    frame_size: tuple[int, int]
    full_size_model: bool
    cache_dir: Path
    workdir: Path | None
    overrides: tuple[tuple[str, str, object], ...] = ()  # (section, key, value) for the daemon


@dataclass(frozen=True)
class Rate:
    images: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Fidelity:
    min_cosine: float
    max_probability_diff: float


@dataclass(frozen=True)
class PrecisionResult:
    precision: Precision
    speed: Rate
    fidelity: Fidelity


@dataclass(frozen=True)
class DaemonResult:
    ready_seconds: float
    burst: Rate
    single_file_seconds: float
    peak_rss_bytes: int
    vm_hwm_bytes: int | None  # the daemon process itself
    children_vm_hwm_bytes: int  # sum of its children's own peaks (an upper bound together)
    decisions: dict[str, int]
    burst_cpu: BurstCpu


@dataclass(frozen=True)
class BurstCpu:
    """Where the CPU went between the first drop and the last file done."""

    daemon_seconds: float  # the daemon process: model, intake, routing, database
    decoder_seconds: float  # its decoder processes
    idle_fraction: float  # of the whole machine's CPU over the burst

    def per_image_ms(self, images: int) -> float:
        return 1000 * (self.daemon_seconds + self.decoder_seconds) / images


@dataclass(frozen=True)
class BenchFile:
    """One input file: where it is cached and the name it gets in the inbox."""

    path: Path
    inbox_name: str


# --- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_header() -> list[str]:
    threads_env = {
        name: os.environ.get(name, "unset") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    return [
        f"machine: {cpu_model()}, {os.cpu_count()} cores "
        f"({len(os.sched_getaffinity(0))} usable), "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {platform.machine()}",
        f"software: Python {platform.python_version()}, torch {torch.__version__} "
        f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"transformers {transformers.__version__}, Pillow {PIL.__version__}",
        f"threads: torch intra-op {torch.get_num_threads()}, inter-op "
        f"{torch.get_num_interop_threads()}, "
        + ", ".join(f"{name}={value}" for name, value in threads_env.items()),
    ]


class CpuAccount:
    """CPU time spent on this machine by processes other than this benchmark and its children.

    The figures here are only as good as the machine is quiet; this says how quiet it was.
    """

    def __init__(self) -> None:
        self._system = psutil.cpu_times()
        self._own = os.times()
        self._wall = time.monotonic()

    def report(self) -> str:
        system, own = psutil.cpu_times(), os.times()
        busy = sum(
            getattr(system, name) - getattr(self._system, name)
            for name in ("user", "nice", "system", "irq", "softirq")
        )
        mine = sum(own[:4]) - sum(self._own[:4])  # user, system, children's user and system
        wall = time.monotonic() - self._wall
        steal = system.steal - self._system.steal
        others = max(0.0, busy - mine)
        return (
            f"CPU time during the run: this benchmark and the daemon {mine:.0f} s, other "
            f"processes {others:.0f} s ({others / wall:.2f} cores on average), hypervisor "
            f"steal {steal:.0f} s, over {wall:.0f} s wall"
        )


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average before the run: {one:.2f} {five:.2f} {fifteen:.2f}"


# --- inputs: model, synthetic frames, samples --------------------------------------------------


def ensure_model(cache_dir: Path, *, full_size: bool) -> Path:
    """Build the random CLIP once; a finished build is marked so a killed one is redone."""
    folder = cache_dir / ("clip-vit-b32-random" if full_size else "clip-tiny-random")
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    say(f"building {'ViT-B/32-sized' if full_size else 'tiny'} random CLIP in {folder} ...")
    build_test_model(folder, full_size=full_size)
    marker.touch()
    return folder


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


def _decodes_both_ways(path: Path) -> bool:
    """The daemon's decoder, with and without draft: files it would quarantine are left out."""
    data = path.read_bytes()
    try:
        decode_image(data, name=str(path), draft_size=DRAFT_SIZE)
        decode_image(data, name=str(path), draft_size=None)
    except ImageError:
        return False
    return True


def usable_samples(limit: int | None) -> tuple[list[Path], list[Path]]:
    """(usable, left out) real sample photos, deduplicated by content; none when absent."""
    if not SAMPLES_DIR.is_dir():
        return [], []
    seen: set[str] = set()
    usable: list[Path] = []
    left_out: list[Path] = []
    candidates = sorted(p for p in SAMPLES_DIR.rglob("*") if p.suffix.lower() in SAMPLE_SUFFIXES)
    for path in candidates:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen or not _decodes_both_ways(path):
            left_out.append(path)
            continue
        seen.add(digest)
        usable.append(path)
    return usable[:limit], left_out


def bench_files(frames: Sequence[Path], samples: Sequence[Path]) -> list[BenchFile]:
    files = [BenchFile(path, path.name) for path in frames]
    for path in samples:
        relative = path.relative_to(SAMPLES_DIR)
        files.append(BenchFile(path, "sample_" + "_".join(relative.parts)))
    return files


def evenly_spaced(items: Sequence[BenchFile], count: int) -> list[BenchFile]:
    """A subset spread over the whole list, so it has the same mix of frames and samples."""
    if count >= len(items):
        return list(items)
    positions = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[position] for position in sorted(set(positions.tolist()))]


# --- (a) the notebook's way --------------------------------------------------------------------


def _notebook_one(model: Any, processor: Any, path: Path) -> None:
    image = Image.open(path).convert("RGB")
    inputs = processor(text=list(LABELS), images=image, return_tensors="pt", padding=True)
    with torch.no_grad():
        outputs = model(**inputs)
    outputs.logits_per_image.softmax(dim=1)


def measure_notebook(model_dir: Path, files: Sequence[BenchFile]) -> Rate:
    """Full decode, processor on text and image, the whole CLIPModel, one image at a time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CLIPModel.from_pretrained(model_dir).eval()  # type: ignore[no-untyped-call]
        processor = CLIPProcessor.from_pretrained(model_dir)
    _notebook_one(model, processor, files[0].path)  # warm-up, not timed
    started = time.perf_counter()
    for file in files:
        _notebook_one(model, processor, file.path)
    return Rate(len(files), time.perf_counter() - started)


# --- (c) the classifier alone, and precision fidelity -------------------------------------------


def load_classifier(model_dir: Path, precision: Precision) -> ClipClassifier:
    return ClipClassifier.load(str(model_dir), LABELS, TARGETS, precision=precision)


def preprocessed(
    classifier: ClipClassifier, paths: Sequence[Path], draft: int | None
) -> torch.Tensor:
    """Decode like the daemon (draft) or in full (draft None), then CLIP-preprocess each image."""
    tensors = []
    for path in paths:
        decoded = decode_image(path.read_bytes(), name=str(path), draft_size=draft)
        tensors.append(classifier.preprocess(decoded.image))
    return torch.stack(tensors)


def embed(
    classifier: ClipClassifier, pixels: torch.Tensor, batch_size: int
) -> tuple[FloatArray, FloatArray]:
    """(embeddings, probabilities) row per image, computed in batches of batch_size."""
    results = []
    for start in range(0, len(pixels), batch_size):
        results.extend(classifier.classify_tensors(pixels[start : start + batch_size]))
    embeddings = np.stack([result.embedding for result in results]).astype(np.float32)
    probabilities = np.array(
        [[result.probabilities[label] for label in LABELS] for result in results], np.float32
    )
    return embeddings, probabilities


def compare(
    reference: tuple[FloatArray, FloatArray], other: tuple[FloatArray, FloatArray]
) -> Fidelity:
    # The embeddings are L2-normalised, so the row-wise dot product is the cosine.
    cosines = np.sum(reference[0].astype(np.float64) * other[0], axis=1)
    differences = np.abs(reference[1].astype(np.float64) - other[1])
    return Fidelity(float(cosines.min()), float(differences.max()))


def classifier_speed(
    classifier: ClipClassifier, batch: torch.Tensor, min_seconds: float
) -> tuple[Rate, Rate]:
    """classify_tensors on one ready batch, repeated for at least min_seconds (and 3 batches).

    Returns the rates of the median and of the fastest batch: on a shared machine a
    neighbour's burst then spoils a few batches rather than the figure, and the fastest batch
    shows what the model can do when it has the cores to itself.
    """
    classifier.classify_tensors(batch)  # warm-up: first-call allocations, oneDNN kernel choice
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < 3 or time.perf_counter() - started < min_seconds:
        batch_started = time.perf_counter()
        classifier.classify_tensors(batch)
        durations.append(time.perf_counter() - batch_started)
    return Rate(len(batch), float(np.median(durations))), Rate(len(batch), min(durations))


def speed_batch(fidelity_pixels: torch.Tensor, batch_size: int) -> torch.Tensor:
    indices = [index % len(fidelity_pixels) for index in range(batch_size)]
    return fidelity_pixels[indices].contiguous()


def measure_precisions(
    model_dir: Path, fidelity_paths: Sequence[Path], settings: Settings
) -> tuple[list[PrecisionResult], Fidelity]:
    """Speed and fidelity (vs fp32) per precision; plus draft-vs-full decoding under fp32."""
    fp32 = load_classifier(model_dir, "fp32")
    draft_pixels = preprocessed(fp32, fidelity_paths, DRAFT_SIZE)
    full_pixels = preprocessed(fp32, fidelity_paths, None)
    reference = embed(fp32, draft_pixels, settings.batch_size)
    draft_fidelity = compare(embed(fp32, full_pixels, settings.batch_size), reference)
    batch = speed_batch(draft_pixels, settings.batch_size)
    del fp32
    results = []
    for precision in PRECISIONS:
        classifier = load_classifier(model_dir, precision)
        speed, best = classifier_speed(classifier, batch, settings.speed_seconds)
        fidelity = compare(reference, embed(classifier, draft_pixels, settings.batch_size))
        results.append(PrecisionResult(precision, speed, fidelity))
        say(
            f"  {precision:<5} {speed.per_second:7.1f} images/s (best batch "
            f"{best.per_second:6.1f})   min cosine "
            f"{fidelity.min_cosine:.6f}   max |dp| {fidelity.max_probability_diff:.2e}"
        )
        del classifier
        gc.collect()
    return results, draft_fidelity


# --- (b) the daemon end to end -------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonLayout:
    workdir: Path

    @property
    def staging(self) -> Path:
        return self.workdir / "staging"

    @property
    def inbox(self) -> Path:
        return self.workdir / "inbox"

    @property
    def database(self) -> Path:
        return self.workdir / "tigerwatch.db"

    @property
    def config(self) -> Path:
        return self.workdir / "tigerwatch.yaml"

    @property
    def log(self) -> Path:
        return self.workdir / "daemon.log"

    def folders(self) -> dict[str, Path]:
        names = ("staging", "inbox", "review", "archive", "quarantine")
        return {name: self.workdir / name for name in names}

    def reset(self) -> None:
        """Remove what an earlier run left (only the names this benchmark creates)."""
        for folder in self.folders().values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for path in self.workdir.glob("tigerwatch.db*"):
            path.unlink()


def write_daemon_config(layout: DaemonLayout, model_dir: Path, settings: Settings) -> None:
    folders = layout.folders()
    config = {
        "station": "throughput-bench",
        "paths": {
            "inbox": [str(folders["inbox"])],
            "review": str(folders["review"]),
            "archive": str(folders["archive"]),
            "quarantine": str(folders["quarantine"]),
        },
        "database": {"url": f"sqlite:///{layout.database}"},
        "model": {
            "name_or_path": str(model_dir),
            "batch_size": settings.batch_size,
            "precision": settings.precision,
            "device": "cpu",
        },
        "watch": {"quiet_seconds": settings.quiet_seconds},
        "logging": {"level": "WARNING"},
    }
    for section, key, value in settings.overrides:
        config.setdefault(section, {})[key] = value  # type: ignore[index]
    layout.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def stage(files: Sequence[BenchFile], staging: Path) -> list[Path]:
    """Hard-link (or copy, across filesystems) into staging, next to the inbox for renames."""
    staged = []
    for file in files:
        target = staging / file.inbox_name
        try:
            os.link(file.path, target)
        except OSError:
            shutil.copy2(file.path, target)
        staged.append(target)
    return staged


class RssSampler:
    """Polls the resident memory of a process and its children; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        members = [self._process, *self._process.children(recursive=True)]
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.wait(RSS_POLL_SECONDS):
            with contextlib.suppress(psutil.Error):
                self.peak_bytes = max(self.peak_bytes, self._sample())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def child_processes(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return list(psutil.Process(pid).children(recursive=True))
    return []


def vm_hwm_bytes(pid: int) -> int | None:
    """The kernel's exact peak resident size of one process (not its children)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


REAPED = -1  # key for the CPU of children that have already exited


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU seconds of a process and each of its children, by pid."""
    seconds: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for member in [root, *child_processes(pid)]:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                seconds[member.pid] = times.user + times.system
        # Decoders that ended (timed out, crashed, replaced) and were reaped count here.
        reaped = root.cpu_times()
        seconds[REAPED] = reaped.children_user + reaped.children_system
    return seconds


class BurstCpuMeter:
    """CPU of the daemon and its decoders, and the machine's idle share, between two points.

    The idle share also counts this benchmark's own polling as busy; it is small.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._tree = tree_cpu_seconds(pid)
        self._idle = psutil.cpu_times().idle
        self._wall = time.monotonic()

    def stop(self) -> BurstCpu:
        tree = tree_cpu_seconds(self._pid)
        idle = psutil.cpu_times().idle - self._idle
        wall = time.monotonic() - self._wall
        used = {pid: seconds - self._tree.get(pid, 0.0) for pid, seconds in tree.items()}
        daemon = used.pop(self._pid, 0.0)
        return BurstCpu(daemon, sum(used.values()), idle / (wall * usable_cores()))


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing in for systemd's; the path is short (sun_path limit)."""
    path = f"/tmp/twbench-{os.getpid()}.sock"
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(0.25)
        yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def log_tail(layout: DaemonLayout, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(layout.log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_ready(sock: socket.socket, process: subprocess.Popen[bytes], layout: DaemonLayout) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(
                f"daemon exited with code {process.returncode} before READY=1; "
                f"log {layout.log}:\n{log_tail(layout)}"
            )
        try:
            message = sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            continue
        if "READY=1" in message.splitlines():
            return
    raise BenchmarkError(f"no READY=1 within {READY_TIMEOUT_SECONDS:.0f} s")


def wait_done(
    db: sqlite3.Connection,
    count: int,
    process: subprocess.Popen[bytes],
    layout: DaemonLayout,
    timeout: float,
) -> float:
    """Poll the images table until `count` rows are done; return the monotonic time seen."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = db.execute("SELECT count(*) FROM images WHERE state = 'done'").fetchone()[0]
        if done >= count:
            return time.monotonic()
        if process.poll() is not None:
            raise BenchmarkError(
                f"daemon exited with code {process.returncode} after {done} of {count} "
                f"files; log {layout.log}:\n{log_tail(layout)}"
            )
        time.sleep(DB_POLL_SECONDS)
    raise BenchmarkError(
        f"only {done} of {count} files done after {timeout:.0f} s; log:\n{log_tail(layout)}"
    )


def drop(staged: Sequence[Path], inbox: Path) -> None:
    for path in staged:
        path.rename(inbox / path.name)  # same filesystem: atomic and instant


def decisions(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute("SELECT coalesce(decision, state), count(*) FROM images GROUP BY 1")
    return {str(name): int(count) for name, count in rows.fetchall()}


def start_daemon(layout: DaemonLayout, socket_path: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": socket_path, "PYTHONUNBUFFERED": "1"}
    with layout.log.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "-c", str(layout.config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd does; kill it (and any decode children it left) if it hangs."""
    children = child_processes(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            say(f"  daemon did not stop {STOP_TIMEOUT_SECONDS:.0f} s after SIGTERM; killing it")
            process.kill()
            process.wait()
    for child in children:
        # psutil refuses to signal a pid that a new process has taken since it was listed.
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
                say(f"  killed process {child.pid} that the daemon left behind")


def burst_timeout(count: int) -> float:
    return 120.0 + 2.0 * count  # generous: > 10x the slowest rate seen on 2 cores


def measure_daemon(
    layout: DaemonLayout,
    model_dir: Path,
    files: Sequence[BenchFile],
    single: BenchFile,
    settings: Settings,
) -> DaemonResult:
    """Start the daemon, drop every file at once, then one more into the idle daemon."""
    layout.reset()
    write_daemon_config(layout, model_dir, settings)
    staged = stage(files, layout.staging)
    staged_single = stage([single], layout.staging)
    with notify_socket() as (sock, socket_path):
        started = time.monotonic()
        process = start_daemon(layout, socket_path)
        sampler = RssSampler(process.pid)
        try:
            wait_ready(sock, process, layout)
            ready_seconds = time.monotonic() - started
            with contextlib.closing(sqlite3.connect(layout.database, isolation_level=None)) as db:
                meter = BurstCpuMeter(process.pid)
                burst = _timed_drop(db, staged, 0, process, layout)
                burst_cpu = meter.stop()
                time.sleep(IDLE_PAUSE_SECONDS)
                single_rate = _timed_drop(db, staged_single, len(staged), process, layout)
                found = decisions(db)
            hwm = vm_hwm_bytes(process.pid)
            children_hwm = sum(
                vm_hwm_bytes(child.pid) or 0 for child in child_processes(process.pid)
            )
        finally:
            stop_daemon(process)
            peak = sampler.stop()
    return DaemonResult(
        ready_seconds, burst, single_rate.seconds, peak, hwm, children_hwm, found, burst_cpu
    )


def _timed_drop(
    db: sqlite3.Connection,
    staged: Sequence[Path],
    done_before: int,
    process: subprocess.Popen[bytes],
    layout: DaemonLayout,
) -> Rate:
    started = time.monotonic()
    drop(staged, layout.inbox)
    finished = wait_done(db, done_before + len(staged), process, layout, burst_timeout(len(staged)))
    return Rate(len(staged), finished - started)


# --- the run -----------------------------------------------------------------------------------


def report_daemon(result: DaemonResult, settings: Settings) -> None:
    quiet = settings.quiet_seconds
    share = quiet / result.burst.seconds if result.burst.seconds > 0 else float("inf")
    after_quiet = result.single_file_seconds - quiet
    verdict = "yes" if after_quiet <= SINGLE_FILE_TARGET_SECONDS else "NO"
    hwm = f"{result.vm_hwm_bytes / MIB:.0f} MiB" if result.vm_hwm_bytes is not None else "n/a"
    if result.children_vm_hwm_bytes:
        hwm += f" + children's {result.children_vm_hwm_bytes / MIB:.0f} MiB"
    say(f"  start to READY=1:      {result.ready_seconds:.1f} s")
    say(
        f"  burst:                 {result.burst.images} files in {result.burst.seconds:.1f} s "
        f"= {result.burst.per_second:.2f} images/s (first drop to last file done)"
    )
    cpu = result.burst_cpu
    say(
        f"  CPU in the burst:      daemon process {cpu.daemon_seconds:.1f} s + decoder "
        f"processes {cpu.decoder_seconds:.1f} s = {cpu.per_image_ms(result.burst.images):.1f} ms "
        f"per image; the machine was idle {cpu.idle_fraction:.0%} of the time"
    )
    say(f"  quiet period:          {quiet:g} s = {share:.1%} of the burst time")
    if share >= 0.1:
        say("  WARNING: the quiet period is not under a tenth of the burst; use more --frames")
    say(
        f"  single file, idle:     {result.single_file_seconds:.2f} s drop to done = "
        f"{after_quiet:.2f} s after the quiet period (within {SINGLE_FILE_TARGET_SECONDS:g} s: "
        f"{verdict})"
    )
    say(
        f"  peak RSS:              {result.peak_rss_bytes / MIB:.0f} MiB = "
        f"{result.peak_rss_bytes / 1e9:.3f} GB (psutil, process + "
        f"children, every {RSS_POLL_SECONDS * 1000:.0f} ms); VmHWM at the end {hwm}"
    )
    say(f"  outcomes:              {result.decisions}")


def describe_inputs(
    files: Sequence[BenchFile], frames: int, samples: int, left_out: Sequence[Path]
) -> None:
    total_mb = sum(file.path.stat().st_size for file in files) / 1e6
    say(
        f"inputs: {frames} synthetic frames + {samples} real samples = {len(files)} files, "
        f"{total_mb:.0f} MB"
    )
    if left_out:
        names = ", ".join(path.name for path in left_out)
        say(
            f"  samples left out: {names} (duplicate content, or the daemon's decoder refuses "
            "it, so it would wait out decode retries)"
        )
    if not SAMPLES_DIR.is_dir():
        say(f"  no samples at {SAMPLES_DIR}: fidelity uses synthetic frames")


def run(settings: Settings, layout: DaemonLayout) -> str:
    torch.set_num_threads(os.cpu_count() or 1)  # what the daemon does with model.threads null
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    for line in machine_header():
        say(line)
    say(load_line())
    account = CpuAccount()
    model_dir = ensure_model(settings.cache_dir, full_size=settings.full_size_model)
    frame_paths = ensure_frames(settings.cache_dir, settings.frames + 1, settings.frame_size)
    samples, left_out = usable_samples(settings.samples_limit)
    files = bench_files(frame_paths[:-1], samples)
    single = bench_files(frame_paths[-1:], [])[0]
    describe_inputs(files, settings.frames, len(samples), left_out)
    kind = "ViT-B/32-sized random" if settings.full_size_model else "tiny random"
    say(
        f"model: {kind} CLIP at {model_dir}; precision {settings.precision}, "
        f"batch {settings.batch_size}; {len(LABELS)} labels"
    )
    say()

    notebook_files = evenly_spaced(files, settings.notebook_frames)
    say(
        f"(a) the notebook's way, on {len(notebook_files)} of the {len(files)} files "
        "(evenly spaced; one untimed warm-up image first; torch.no_grad)"
    )
    notebook = measure_notebook(model_dir, notebook_files)
    say(f"  {notebook.per_second:.2f} images/s ({notebook.images} in {notebook.seconds:.1f} s)")
    gc.collect()
    say()

    fidelity_paths = samples or [file.path for file in files[:16]]
    say(
        f"precision options: classifier alone on ready 224x224 tensors, batch "
        f"{settings.batch_size}, median batch over >= {settings.speed_seconds:g} s; fidelity "
        f"vs fp32 on {len(fidelity_paths)} {'sample' if samples else 'synthetic'} images "
        "(decoded the daemon's way)"
    )
    precision_results, draft_fidelity = measure_precisions(model_dir, fidelity_paths, settings)
    say(
        f"  draft decoding ({DRAFT_SIZE}) vs full decoding, fp32: min cosine "
        f"{draft_fidelity.min_cosine:.6f}   max |dp| {draft_fidelity.max_probability_diff:.2e}"
    )
    say("  (the weights are random: fidelity figures show numeric drift, not label quality)")
    chosen = next(result for result in precision_results if result.precision == settings.precision)
    say(
        f"(c) classifier alone, {settings.precision}, batch {settings.batch_size} (median "
        f"batch): "
        f"{chosen.speed.per_second:.1f} images/s"
    )
    gc.collect()
    say()

    say(f"(b) the daemon end to end: python -m daemon run -c {layout.config}")
    for section, key, value in settings.overrides:
        say(f"  setting: {section}.{key} = {value!r}")
    daemon = measure_daemon(layout, model_dir, files, single, settings)
    report_daemon(daemon, settings)
    say()
    for line in cpu_budget(notebook, daemon, chosen.speed):
        say(line)
    say()
    say(account.report())
    return summary_line(notebook, daemon, chosen.speed, settings)


def cpu_budget(notebook: Rate, daemon: DaemonResult, classifier: Rate) -> list[str]:
    """Why b/a and b/c end where they do: CPU per image, from this run's own figures."""
    cores = usable_cores()
    total_ms = daemon.burst_cpu.per_image_ms(daemon.burst.images)
    model_ms = 1000 * cores / classifier.per_second  # (c) keeps every core busy
    if model_ms >= total_ms:
        return [
            f"CPU budget ({cores} cores): the daemon spent {total_ms:.1f} ms of CPU per image, "
            f"less than the {model_ms:.1f} ms that cores / c suggests the model needs: (c) is "
            "not CPU-bound at this size, so no budget follows."
        ]
    rest_ms = total_ms - model_ms
    ceiling = 1000 * cores / total_ms
    return [
        f"CPU budget ({cores} cores, from this run): the model needs about {model_ms:.1f} ms of "
        f"CPU per image (cores / c); the daemon spent {total_ms:.1f} ms per image in all, so "
        f"about {rest_ms:.1f} ms outside the model (decoding, hashing, database, moves).",
        f"  At this CPU per image, with every core busy, b <= {ceiling:.1f} images/s: b/a <= "
        f"{ceiling / notebook.per_second:.2f} and b/c <= {model_ms / total_ms:.2f}. (cores / c "
        "is the model's wall time on all cores, so contention shows up in the rest.)",
    ]


def summary_line(notebook: Rate, daemon: DaemonResult, classifier: Rate, settings: Settings) -> str:
    b = daemon.burst.per_second
    return (
        f"SUMMARY a_notebook={notebook.per_second:.2f}img/s b_daemon={b:.2f}img/s "
        f"c_classifier={classifier.per_second:.2f}img/s b/a={b / notebook.per_second:.2f} "
        f"b/c={b / classifier.per_second:.2f} peak_rss={daemon.peak_rss_bytes / MIB:.0f}MiB "
        f"ready={daemon.ready_seconds:.1f}s "
        f"single_after_quiet={daemon.single_file_seconds - settings.quiet_seconds:.2f}s "
        f"quiet={settings.quiet_seconds:g}s precision={settings.precision} "
        f"batch={settings.batch_size} files={daemon.burst.images}"
    )


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--frames", type=int, default=None, help="synthetic frames (300; quick 20)")
    parser.add_argument(
        "--notebook-frames",
        type=int,
        default=None,
        help="files for the slow notebook measurement (30; quick 4)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision of the daemon run and of (c) (config default: fp32)",
    )
    batch_size = Model.model_fields["batch_size"].default
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"model.batch_size ({batch_size})"
    )
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=None,
        help="watch.quiet_seconds of the daemon (1; quick 0.3)",
    )
    parser.add_argument(
        "--speed-seconds",
        type=float,
        default=None,
        help="minimum timing per precision for (c) (8; quick 0.5)",
    )
    parser.add_argument(
        "--samples-limit",
        type=int,
        default=None,
        help="use at most this many real samples (all; quick 4)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the daemon's inbox, outputs and database (temp dir)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help="where models and frames are cached (bench/out)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra daemon setting for (b), e.g. --set worker.decode_processes=1 (YAML value)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny model, 20 small frames, finishes in < 60 s",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    settings = Settings(
        frames=pick(args.frames, 300, 20),
        notebook_frames=pick(args.notebook_frames, 30, 4),
        precision=args.precision,
        batch_size=args.batch_size,
        quiet_seconds=pick(args.quiet_seconds, 1.0, 0.3),
        speed_seconds=pick(args.speed_seconds, 8.0, 0.5),
        samples_limit=pick(args.samples_limit, None, 4),
        frame_size=QUICK_FRAME_SIZE if quick else FULL_FRAME_SIZE,
        full_size_model=not quick,
        cache_dir=args.cache_dir.resolve(),
        workdir=args.workdir.resolve() if args.workdir else None,
        overrides=tuple(_override(parser, text) for text in args.set),
    )
    if settings.frames < 1 or settings.notebook_frames < 1:
        parser.error("--frames and --notebook-frames must be at least 1")
    if not 1 <= settings.batch_size <= MAX_BATCH_SIZE:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH_SIZE} (the config's range)")
    return settings


def _override(parser: argparse.ArgumentParser, text: str) -> tuple[str, str, object]:
    name, separator, value = text.partition("=")
    section, dot, key = name.partition(".")
    if not (separator and dot and section and key):
        parser.error(f"--set {text!r}: expected SECTION.KEY=VALUE")
    return section, key, yaml.safe_load(value)


@contextlib.contextmanager
def workdir_for(settings: Settings) -> Iterator[Path]:
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        yield settings.workdir
        return
    with tempfile.TemporaryDirectory(prefix="tigerwatch-bench-") as temporary:
        yield Path(temporary)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    started = time.perf_counter()
    try:
        with workdir_for(settings) as workdir:
            line = run(settings, DaemonLayout(workdir))
    except BenchmarkError as err:
        say(f"benchmark failed: {err}")
        return 1
    say(f"total benchmark time: {time.perf_counter() - started:.0f} s")
    say(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
