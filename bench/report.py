"""The run's conclusions: the CPU budget behind b/a and b/c, and the one-line summary."""

from __future__ import annotations

from bench.daemon_run import DaemonResult
from bench.harness import MIB, Rate, usable_cores
from bench.settings import Settings


def cpu_budget(
    notebook: Rate, daemon: DaemonResult, classifier: Rate, inputs_per_file: float
) -> list[str]:
    """Why b/a and b/c end where they do: CPU per image, from this run's own figures.

    `inputs_per_file`: the model inputs of the daemon's view per file (crops: 2 for 4:3)."""
    cores = usable_cores()
    total_ms = daemon.burst_cpu.per_image_ms(daemon.burst.images)
    model_ms = 1000 * cores * inputs_per_file / classifier.per_second  # (c) keeps every core busy
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
        "per model input is the model's wall time on all cores, so contention shows up in the "
        "rest; c counts model inputs, b files.)",
    ]


def summary_line(notebook: Rate, daemon: DaemonResult, classifier: Rate, settings: Settings) -> str:
    b = daemon.rate.per_second
    return (
        f"SUMMARY a_notebook={notebook.per_second:.2f}img/s b_daemon={b:.2f}img/s "
        f"b_with_quiet={daemon.burst.per_second:.2f}img/s "
        f"c_classifier={classifier.per_second:.2f}img/s b/a={b / notebook.per_second:.2f} "
        f"b/c={b / classifier.per_second:.2f} peak_rss={daemon.peak_rss_bytes / MIB:.0f}MiB "
        f"ready={daemon.ready_seconds:.1f}s "
        f"single_after_quiet={daemon.single_file_seconds - settings.quiet_seconds:.2f}s "
        f"quiet={settings.quiet_seconds:g}s precision={settings.precision} "
        f"batch={settings.batch_size} files={daemon.burst.images}"
    )
