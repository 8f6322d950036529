"""A decoder unpickles its jobs without pydantic: the `strips:` settings travel as plain data."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

from daemon.config_strips import CameraStrips, Strips
from daemon.decode.jobs import DecodeJob
from daemon.decode.preprocess import PreprocessSpec
from daemon.decode.strip_rules import StripRules
from tests.daemon_support import REPO_ROOT

SETTINGS = Strips(
    detect=False,
    cameras=(
        CameraStrips(camera="Reconyx  HC500", top=0.05, bottom=0.1),
        CameraStrips(camera="bushnell", detect=True),
    ),
)


def job_with(strips: Strips) -> DecodeJob:
    spec = PreprocessSpec(
        size=224, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3, resample=3, rescale_factor=1 / 255
    )
    return DecodeJob(
        path="/x.jpg", sha256="0" * 64, formats=("JPEG",), max_pixels=10, draft_size=224,
        spec=spec, strips=strips,
    )  # fmt: skip


def test_the_job_keeps_the_configured_rules() -> None:
    rules = job_with(SETTINGS).strips

    assert isinstance(rules, StripRules)
    assert rules.detect is False
    for camera in ("reconyx hc500", "bushnell", "other"):
        expected, got = SETTINGS.rule_for(camera), rules.rule_for(camera)
        assert (got is None) == (expected is None)
        if expected is not None and got is not None:
            assert (got.detect, got.top, got.bottom) == (
                expected.detect,
                expected.top,
                expected.bottom,
            )


def test_a_decoder_unpickles_a_job_without_importing_pydantic() -> None:
    payload = pickle.dumps(job_with(SETTINGS)).hex()
    script = (
        "import json, pickle, sys\n"
        "from daemon.decode.child import serve_child\n"
        f"job = pickle.loads(bytes.fromhex({payload!r}))\n"
        "rule = job.strips.rule_for('reconyx hc500')\n"
        "print(json.dumps(['pydantic' in sys.modules, rule.top, rule.bottom]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )

    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [False, 0.05, 0.1]
