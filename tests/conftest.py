"""Shared fixtures: a tiny CLIP built once per session, the default prompts, the sample photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import config
from scripts.make_test_model import build_test_model

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"

# The daemon's own default labels: one definition, in daemon/config.py.
DEFAULT_LABELS = tuple(label.text for label in config.DEFAULT_LABELS)
DEFAULT_TARGETS = tuple(label.target for label in config.DEFAULT_LABELS)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny CLIP saved like a downloaded model (built once per session)."""
    return build_test_model(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def default_labels() -> list[str]:
    """The six default prompts; session-scoped so module-scoped fixtures can use them."""
    return list(DEFAULT_LABELS)


@pytest.fixture(scope="session")
def default_targets() -> list[bool]:
    """Target flags matching default_labels: the two tiger prompts."""
    return list(DEFAULT_TARGETS)


@pytest.fixture
def samples_dir() -> Path:
    """The real camera-trap photos in ../shared/samples; skips the test when they are absent."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"sample photos not found at {SAMPLES_DIR}")
    return SAMPLES_DIR
