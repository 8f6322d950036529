"""GIL probe: the model lanes' images/s alone and beside a Python thread that holds the GIL.

Why the daemon's lanes lose time to its other threads: eager PyTorch gives the GIL up for each
operator and takes it back after, so a thread running Python (SQLAlchemy, watchdog) stalls both
lanes for as long as it holds it. `python -m bench.gil_probe [--precision int8] [--share 0.25]`
prints the machine, then the lanes' rate alone and beside a thread that holds the GIL `share` of
the time, in bursts of 1 ms; the ratio is the figure, from one run.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence

import numpy as np
import torch

from bench.harness import machine_header, say
from bench.inputs import DEFAULT_CACHE_DIR, TARGETS, ensure_model
from daemon.classify.classifier import ClipClassifier
from daemon.classify.lanes import plan_lanes
from daemon.config import DEFAULT_LABELS

HOLD_SECONDS = 0.001  # one stretch of Python with the GIL held


def lanes_rate(classifier: ClipClassifier, seconds: float, share: float) -> float:
    """Views per second of the daemon's lanes (8 frames of two crops per batch), with a thread
    beside them holding the GIL `share` of the time (0: none)."""
    pixels = [np.full((2, 224, 224, 3), 128, np.uint8) for _ in range(8)]
    classifier.classify_pixels(pixels)  # warm-up
    plan = plan_lanes(None, None, on_gpu=False)
    views = [0] * plan.lanes
    done = threading.Event()

    def lane(index: int) -> None:
        while not done.is_set():
            classifier.classify_pixels(pixels)
            views[index] += 16

    def holder() -> None:
        while not done.is_set():
            started = time.perf_counter()
            while time.perf_counter() - started < HOLD_SECONDS:
                pass  # pure Python: the GIL is held
            time.sleep(HOLD_SECONDS * (1 - share) / share)

    threads = [threading.Thread(target=lane, args=(index,)) for index in range(plan.lanes)]
    if share > 0:
        threads.append(threading.Thread(target=holder))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    done.set()
    for thread in threads:
        thread.join()
    return sum(views) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gil_probe", description=__doc__)
    parser.add_argument("--precision", default="int8", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--share", type=float, default=0.25, help="GIL share held (0.25)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (10)")
    args = parser.parse_args(argv)
    for line in machine_header():
        say(line)
    model_dir = ensure_model(DEFAULT_CACHE_DIR, full_size=True)
    classifier = ClipClassifier.load(
        str(model_dir), DEFAULT_LABELS, TARGETS, precision=args.precision
    )
    torch.set_num_threads(plan_lanes(None, None, on_gpu=False).threads_per_lane)
    alone = lanes_rate(classifier, args.seconds, 0.0)
    beside = lanes_rate(classifier, args.seconds, args.share)
    say(
        f"{args.precision} lanes: alone {alone:.1f} views/s; beside a thread holding the GIL "
        f"{args.share:.0%} of the time {beside:.1f} views/s ({beside / alone:.2f} of alone)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
