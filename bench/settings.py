"""The benchmark's command-line options, parsed into one Settings record."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.frames import FULL_FRAME_SIZE, QUICK_FRAME_SIZE
from bench.harness import REPO_ROOT
from bench.inputs import DEFAULT_CACHE_DIR
from daemon.classify.precision import PRECISIONS, Precision, PrecisionSetting, choose_precision
from daemon.config import Model
from daemon.decode.views import VIEWS, View

DESCRIPTION = (
    "Throughput benchmark: the notebook's way, the daemon end to end, and the classifier alone."
)
RESULTS_DIR = REPO_ROOT / "bench" / "results"
MAX_BATCH_SIZE = 256  # model.batch_size's upper bound in daemon.config


@dataclass(frozen=True)
class Settings:
    frames: int
    notebook_frames: int
    precision: PrecisionSetting  # of the first daemon run; (c) is printed for it
    batch_size: int
    quiet_seconds: float
    speed_seconds: float
    samples_limit: int | None
    frame_size: tuple[int, int]
    full_size_model: bool
    cache_dir: Path
    workdir: Path | None
    json_path: Path  # the run's figures as JSON, written beside the printed table
    overrides: tuple[tuple[str, str, object], ...] = ()  # (section, key, value) for the daemon
    view: View = "crops"  # model.view of the first daemon run
    # Every daemon run, (precision, view), the first one's figures in the summary line.
    daemon_runs: tuple[tuple[PrecisionSetting, View], ...] = (("auto", "crops"),)


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=DESCRIPTION)
    parser.add_argument("--frames", type=int, default=None, help="synthetic frames (300; quick 20)")
    parser.add_argument(
        "--notebook-frames",
        type=int,
        default=None,
        help="files for the slow notebook measurement (30; quick 4)",
    )
    precision_default = Model.model_fields["precision"].default
    view_default = Model.model_fields["view"].default
    parser.add_argument(
        "--precision",
        type=_choices(("auto", *PRECISIONS)),
        default=(precision_default,),
        metavar="P[,P...]",
        help=f"model.precision of the daemon runs, comma-separated ({precision_default}, the "
        "config default; auto, fp32, bf16, int8); (c) is printed for the first",
    )
    parser.add_argument(
        "--view",
        type=_choices(VIEWS),
        default=(view_default,),
        metavar="V[,V...]",
        help=f"model.view of the daemon runs, comma-separated ({view_default}, the config "
        f"default; {', '.join(VIEWS)}); the daemon runs once per precision and view",
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
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the run's figures as JSON here (bench/results/<UTC time>.json)",
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
        precision=args.precision[0],
        batch_size=args.batch_size,
        quiet_seconds=pick(args.quiet_seconds, 1.0, 0.3),
        speed_seconds=pick(args.speed_seconds, 8.0, 0.5),
        samples_limit=pick(args.samples_limit, None, 4),
        frame_size=QUICK_FRAME_SIZE if quick else FULL_FRAME_SIZE,
        full_size_model=not quick,
        cache_dir=args.cache_dir.resolve(),
        workdir=args.workdir.resolve() if args.workdir else None,
        json_path=(args.json or RESULTS_DIR / f"{_utc_stamp()}.json").resolve(),
        overrides=tuple(_override(parser, text) for text in args.set),
        view=args.view[0],
        daemon_runs=tuple((p, v) for v in args.view for p in args.precision),
    )
    if settings.frames < 1 or settings.notebook_frames < 1:
        parser.error("--frames and --notebook-frames must be at least 1")
    if not 1 <= settings.batch_size <= MAX_BATCH_SIZE:
        parser.error(f"--batch-size must be 1 to {MAX_BATCH_SIZE} (the config's range)")
    return settings


def resolved_precision(setting: PrecisionSetting) -> Precision:
    """The precision the daemon runs at on this machine's CPU: auto resolved as it resolves it."""
    return choose_precision(setting, torch.device("cpu"))


def _choices(allowed: Sequence[str]) -> Any:
    """An argparse type: a comma-separated list of distinct values from `allowed`."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(dict.fromkeys(value.strip().lower() for value in text.split(",")))
        wrong = [value for value in values if value not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected one or more of {', '.join(allowed)}, comma-separated"
            )
        return values

    return parse


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


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
