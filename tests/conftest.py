"""Shared fixtures: a tiny CLIP built once per session, the default prompts, the sample photos."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import config
from scripts.make_test_model import build_test_model
from tests.notify_receiver import NotifyReceiver

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"

# The notebook's six labels as single prompts, in the order (and with the meaning) of the
# daemon's defaults in daemon/config.py: tests compare single prompts with transformers' CLIP,
# and the tiny random model's scores on these texts leave room for thresholds.
DEFAULT_LABELS = (
    "a photo of an Amur tiger",
    "a photo of a Bengal tiger",
    "a photo of a lion",
    "a photo of a leopard",
    "a photo of a domestic cat",
    "a photo without a tiger",
)
DEFAULT_TARGETS = tuple(label.target for label in config.DEFAULT_LABELS)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Every in-process CLI call reconfigures the root logger (a DEBUG station config, say);
    give each later test in this worker the logging it had, or its stderr gets their lines."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny CLIP saved like a downloaded model (built once per session)."""
    return build_test_model(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def default_labels() -> list[str]:
    """The notebook's six prompts; session-scoped so module-scoped fixtures can use them."""
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


@pytest.fixture
def notify_receiver() -> Iterator[NotifyReceiver]:
    """A socket standing in for systemd's $NOTIFY_SOCKET; tests set the variables they need."""
    folder = Path(tempfile.mkdtemp(prefix="tw-", dir="/tmp"))  # AF_UNIX paths max 108 bytes
    receiver = NotifyReceiver(folder / "notify")
    yield receiver
    receiver.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport() -> Iterator[None]:
    """Captured output of the hostile-name tests holds undecodable file names (lone surrogates);
    pytest-xdist must send reports as UTF-8, so they are escaped as the terminal would show them."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(title, _printable(text)) for title, text in report.sections]


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
