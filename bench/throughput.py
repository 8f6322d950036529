"""Throughput benchmark: the notebook's way, the daemon end to end, and the classifier alone.

Run from the repository root:

    .venv/bin/python -m bench.throughput                 # full run (ViT-B/32-sized random CLIP)
    .venv/bin/python -m bench.throughput --quick         # smoke run, tiny model, < 60 s

Each measurement is its own module of the bench package (notebook, classifier_alone,
fidelity, decode_stages, daemon_run with meters), on a shared harness; this module runs them
in order, prints the table and writes the same figures as JSON (`--json PATH`, default
bench/results/<UTC time>.json).
Generated models and frames are cached in bench/out/ (gitignored) between runs.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from bench.classifier_alone import PrecisionResult, measure_precisions
from bench.daemon_run import DaemonLayout, measure_daemon, report_daemon
from bench.decode_stages import (
    MAX_STAGE_FRAMES,
    DecodeStages,
    measure_decode_stages,
    report_decode_stages,
)
from bench.frames import ensure_frames
from bench.harness import (
    BenchmarkError,
    CpuAccount,
    Rate,
    load_line,
    machine_header,
    say,
    usable_cores,
    write_json,
)
from bench.inputs import (
    DRAFT_SIZE,
    LABELS,
    BenchFile,
    bench_files,
    describe_inputs,
    ensure_model,
    evenly_spaced,
    usable_samples,
)
from bench.limit import DaemonRate, limits, report_limits
from bench.notebook import measure_notebook
from bench.report import cpu_budget, summary_line
from bench.settings import Settings, parse_settings, resolved_precision, workdir_for
from bench.view_cost import ViewCost, measure_view_costs, report_view_costs
from daemon.classify.lanes import plan_lanes

# What the run found, for the JSON result file: filled in as the measurements finish.
Record = dict[str, Any]


def run(settings: Settings, layout: DaemonLayout, record: Record) -> str:
    """Every measurement in turn, each printed as it finishes and kept in `record`."""
    torch.set_num_threads(os.cpu_count() or 1)  # what the daemon does with model.threads null
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    record["machine"] = machine_header()
    for line in record["machine"]:
        say(line)
    record["load"] = load_line()
    say(record["load"])
    account = CpuAccount()
    inputs = _inputs(settings, record)
    notebook = _notebook(inputs, settings, record)
    chosen = _precisions(inputs, settings, record)
    stages = _decode_stages(inputs, settings, record)
    views = _view_costs(inputs, chosen, record)
    record["limits"] = limits(record["precisions"], stages, views)
    rates = []
    for index, (precision, view) in enumerate(settings.daemon_runs):
        run_settings = replace(settings, precision=precision, view=view)
        daemon = _daemon(layout, inputs, run_settings, record)
        rates.append(
            DaemonRate(
                resolved_precision(precision),
                view,
                daemon.rate.per_second,
                daemon.burst.per_second,
            )
        )
        _accounting(daemon, record, stages, views, view, resolved_precision(precision))
        if index == 0:
            first = daemon
            record["daemon"] = daemon
            per_file = next(cost.inputs_per_frame for cost in views if cost.view == view)
            record["cpu_budget"] = cpu_budget(notebook, daemon, chosen.speed, per_file)
            for line in record["cpu_budget"]:
                say(line)
        say()
    for line in report_limits(record["limits"], rates):
        say(line)
    say()
    record["cpu_account"] = account.report()
    say(record["cpu_account"])
    return summary_line(notebook, first, chosen.speed, settings)


def _lanes_text() -> str:
    plan = plan_lanes(None, None, on_gpu=False)
    return f"{plan.lanes} batch(es) at once, {plan.threads_per_lane} thread(s) each"


def _daemon(layout: DaemonLayout, inputs: _Inputs, settings: Settings, record: Record) -> Any:
    say(
        f"(b) the daemon end to end, precision {settings.precision}, view {settings.view}: "
        f"python -m daemon run -c {layout.config}"
    )
    for section, key, value in settings.overrides:
        say(f"  setting: {section}.{key} = {value!r}")
    daemon = measure_daemon(layout, inputs.model_dir, inputs.files, inputs.single, settings)
    record.setdefault("daemon_runs", []).append(
        {
            "precision": settings.precision,
            "view": settings.view,
            "result": daemon,
            "b_images_per_second": daemon.rate.per_second,  # the burst less its quiet period
        }
    )
    report_daemon(daemon, settings)
    return daemon


def _accounting(
    daemon: Any,
    record: Record,
    stages: DecodeStages,
    views: list[ViewCost],
    view: str,
    precision: str,
) -> None:
    """Where the burst's CPU went per file, against this run's floor and model CPU."""
    cost = next(item for item in views if item.view == view)
    result = next(item for item in record["precisions"] if item.precision == precision)
    files = daemon.burst.images
    model_ms = result.cpu_ms_per_image * cost.inputs_per_frame
    floor_ms = stages.decode_draft_ms + cost.prepare_ms
    daemon_ms = 1000 * daemon.burst_cpu.daemon_seconds / files
    decoders_ms = 1000 * daemon.burst_cpu.decoder_seconds / files
    say(
        f"  CPU per file:          decoders {decoders_ms:.1f} ms (floor {floor_ms:.1f}: "
        f"{decoders_ms - floor_ms:+.1f} ms more); daemon process {daemon_ms:.1f} ms (the model "
        f"at (c)'s CPU {model_ms:.1f}: {daemon_ms - model_ms:+.1f} ms more)"
    )
    # b/limit also falls when other processes take cores; this part of the gap is the daemon's.
    # Over b's time (the burst less its quiet period), so that the two parts below multiply to
    # b/limit: the daemon's CPU in the quiet period is next to nothing.
    cores_had = (daemon.burst_cpu.daemon_seconds + daemon.burst_cpu.decoder_seconds) / (
        daemon.rate.seconds
    )
    say(
        f"  on the CPU it had:     {cores_had:.2f} of {usable_cores()} cores; (model + floor) / "
        f"CPU spent per file = {(model_ms + floor_ms) / (daemon_ms + decoders_ms):.2f} (what "
        "b/limit would be with the cores to itself, at this efficiency)"
    )


@dataclass(frozen=True)
class _Inputs:
    model_dir: Path
    frames: list[Path]  # synthetic frames only, the single file's excluded
    samples: list[Path]
    files: list[BenchFile]  # frames and samples, as dropped into the inbox
    single: BenchFile  # the extra frame dropped into the idle daemon


def _inputs(settings: Settings, record: Record) -> _Inputs:
    model_dir = ensure_model(settings.cache_dir, full_size=settings.full_size_model)
    frame_paths = ensure_frames(settings.cache_dir, settings.frames + 1, settings.frame_size)
    samples, left_out = usable_samples(settings.samples_limit)
    files = bench_files(frame_paths[:-1], samples)
    single = bench_files(frame_paths[-1:], [])[0]
    describe_inputs(files, settings.frames, len(samples), left_out)
    record["inputs"] = {"frames": settings.frames, "samples": len(samples), "files": len(files)}
    kind = "ViT-B/32-sized random" if settings.full_size_model else "tiny random"
    say(
        f"model: {kind} CLIP at {model_dir}; precision {settings.precision}, "
        f"batch {settings.batch_size}; {len(LABELS)} labels"
    )
    say()
    return _Inputs(model_dir, frame_paths[:-1], samples, files, single)


def _notebook(inputs: _Inputs, settings: Settings, record: Record) -> Rate:
    notebook_files = evenly_spaced(inputs.files, settings.notebook_frames)
    say(
        f"(a) the notebook's way, on {len(notebook_files)} of the {len(inputs.files)} files "
        "(evenly spaced; one untimed warm-up image first; torch.no_grad)"
    )
    notebook = measure_notebook(inputs.model_dir, notebook_files)
    record["notebook"] = notebook
    say(f"  {notebook.per_second:.2f} images/s ({notebook.images} in {notebook.seconds:.1f} s)")
    gc.collect()
    say()
    return notebook


def _precisions(inputs: _Inputs, settings: Settings, record: Record) -> PrecisionResult:
    fidelity_paths = inputs.samples or [file.path for file in inputs.files[:16]]
    say(
        f"precision options: classifier alone on ready 224x224 tensors, batch "
        f"{settings.batch_size}, in the daemon's model lanes ({_lanes_text()}), median batch "
        f"over >= {settings.speed_seconds:g} s; fidelity "
        f"vs fp32 on {len(fidelity_paths)} {'sample' if inputs.samples else 'synthetic'} images "
        "(decoded the daemon's way)"
    )
    results, draft_fidelity = measure_precisions(inputs.model_dir, fidelity_paths, settings)
    record["precisions"] = results
    record["draft_vs_full_decoding_fp32"] = draft_fidelity
    say(
        f"  draft decoding ({DRAFT_SIZE}) vs full decoding, fp32: min cosine "
        f"{draft_fidelity.min_cosine:.6f}   max |dp| {draft_fidelity.max_probability_diff:.2e}"
    )
    say("  (the weights are random: fidelity figures show numeric drift, not label quality)")
    precision = resolved_precision(settings.precision)
    chosen = next(result for result in results if result.precision == precision)
    record["classifier"] = chosen.speed
    say(
        f"(c) classifier alone, {settings.precision} ({precision} here), batch "
        f"{settings.batch_size} (median batch): {chosen.speed.per_second:.1f} images/s"
    )
    gc.collect()
    say()
    return chosen


def _decode_stages(inputs: _Inputs, settings: Settings, record: Record) -> DecodeStages:
    frames = inputs.frames[:MAX_STAGE_FRAMES]
    width, height = settings.frame_size
    say(
        f"decode stages: CPU of one thread, median over {len(frames)} synthetic "
        f"{width}x{height} frames"
    )
    stages = measure_decode_stages(inputs.model_dir, frames)
    record["decode_stages"] = stages
    report_decode_stages(stages)
    say()
    return stages


def _view_costs(inputs: _Inputs, chosen: PrecisionResult, record: Record) -> list[ViewCost]:
    frames = inputs.frames or [file.path for file in inputs.files]
    say(
        f"view costs (model.view): CPU on {min(len(frames), 10)} drafted frames; inputs per file "
        f"over the {len(inputs.files)} files; model time from (c), {chosen.precision}"
    )
    files = [file.path for file in inputs.files]
    costs = measure_view_costs(inputs.model_dir, frames, files, chosen.speed)
    record["view_costs"] = costs
    report_view_costs(costs)
    say()
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    started = time.perf_counter()
    record: Record = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
    }
    try:
        with workdir_for(settings) as workdir:
            line = run(settings, DaemonLayout(workdir), record)
    except BenchmarkError as err:
        say(f"benchmark failed: {err}")
        return 1
    record["total_seconds"] = round(time.perf_counter() - started, 1)
    record["summary"] = line
    write_json(settings.json_path, record)
    say(f"total benchmark time: {record['total_seconds']:.0f} s")
    say(f"results as JSON: {settings.json_path}")
    say(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
