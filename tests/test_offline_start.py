"""An offline station learns at once that the model is missing: one probe, no retries, one line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.classify import hub_probe
from tests.daemon_support import REPO_ROOT

# A hang guard only: the retries this test rules out are counted, not timed.
EXIT_GUARD_SECONDS = 120


class SilentHub:
    """A TCP endpoint that accepts connections and never answers: a hub behind a dead link."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)  # held open, never read: no reply ever comes

    def close(self) -> None:
        self._listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_hub() -> Iterator[SilentHub]:
    hub = SilentHub()
    yield hub
    hub.close()


def test_make_run_without_network_fails_at_once_with_one_line(
    tmp_path: Path, silent_hub: SilentHub
) -> None:
    # The example configuration as `make run` uses it (it names the hub model), in a fresh folder.
    config = tmp_path / "config.example.yaml"
    shutil.copy(REPO_ROOT / "config.example.yaml", config)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HTTP"))}
    env |= {
        "HF_HOME": str(tmp_path / "hf-home"),  # an empty cache: nothing was ever downloaded
        "HF_ENDPOINT": f"http://127.0.0.1:{silent_hub.port}",
        "PYTHONPROFILEIMPORTTIME": "1",  # shows whether torch was imported before the message
    }
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "-c", str(config)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXIT_GUARD_SECONDS,
    )
    seconds = time.monotonic() - started
    imports = [line for line in run.stderr.splitlines() if line.startswith("import time:")]
    lines = [line for line in run.stderr.strip().splitlines() if line not in imports]
    errors = [line for line in lines if "Cannot load CLIP model" in line]
    print(f"\n[offline] exit {run.returncode} after {seconds:.1f} s, {len(silent_hub.connections)}")
    print("\n".join(lines))
    assert run.returncode == 3
    assert len(silent_hub.connections) == 1  # the probe: no download attempt, no retries
    assert len(errors) == 1
    message = errors[0]
    assert "did not answer within" in message
    assert "tigerwatch download-model openai/clip-vit-base-patch32" in message
    assert "model.name_or_path" in message  # what to do, on the same line
    assert not [line for line in lines if "retry" in line.lower() or "Retrying" in line]
    assert "Traceback" not in run.stderr
    # The message comes before the seconds torch and transformers take to import, and before
    # the database is created: nothing of the daemon started.
    imported = {line.rsplit("|", 1)[1].strip() for line in imports}
    assert "daemon.cli" in imported and "huggingface_hub" in imported  # the profile is there
    assert not {"torch", "transformers", "daemon.service"} & imported
    assert not (tmp_path / "station-data" / "tigerwatch.db").exists()


def test_a_name_lookup_that_never_answers_is_given_up_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """urllib's timeout does not cover the name lookup; on a dead link the resolver retries
    for 10 s and more."""
    release = threading.Event()

    def hanging_lookup(*_args: object, **_kwargs: object) -> list[object]:
        release.wait(60)
        raise socket.gaierror("resolver gave up")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    monkeypatch.setattr(hub_probe, "hub_endpoint", lambda: "https://hub.invalid")
    try:
        reason = hub_probe.hub_unreachable_reason(timeout=0.2)
    finally:
        release.set()
    assert reason == "https://hub.invalid did not answer within 0.2 s (no name lookup or reply)"
