"""Throughput benchmark: the notebook's way, the daemon end to end, and the classifier alone.

Run from the repository root:

    .venv/bin/python -m bench.throughput                 # full run (ViT-B/32-sized random CLIP)
    .venv/bin/python -m bench.throughput --quick         # smoke run, tiny model, < 60 s

Each measurement is its own module of the bench package (notebook, classifier_alone,
fidelity, daemon_run with meters), on a shared harness; this module runs them in order.
Generated models and frames are cached in bench/out/ (gitignored) between runs.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence

import torch
from transformers.utils import logging as transformers_logging

from bench.classifier_alone import measure_precisions
from bench.daemon_run import DaemonLayout, measure_daemon, report_daemon
from bench.frames import ensure_frames
from bench.harness import BenchmarkError, CpuAccount, load_line, machine_header, say
from bench.inputs import (
    DRAFT_SIZE,
    LABELS,
    bench_files,
    describe_inputs,
    ensure_model,
    evenly_spaced,
    usable_samples,
)
from bench.notebook import measure_notebook
from bench.report import cpu_budget, summary_line
from bench.settings import Settings, parse_settings, workdir_for


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
