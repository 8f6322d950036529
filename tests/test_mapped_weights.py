"""The model file changed under a running daemon, whose image tower maps its weights."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    SETTLE_TIMEOUT,
    make_station,
    noise_jpeg,
    query,
    ready_lines,
    start_daemon_process,
    wait_for,
    write_file,
)


def test_a_model_file_truncated_under_the_daemon_ends_it_and_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for source in tiny_model_dir.iterdir():
        (model / source.name).write_bytes(source.read_bytes())
    station = make_station(tmp_path / "station", model)
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    try:
        assert wait_for(lambda: ready_lines(log) >= 1, PROCESS_START_TIMEOUT), log.read_text()
        with (model / "model.safetensors").open("r+b") as stream:
            stream.truncate(4096)  # what `cp new model.safetensors` does first
        write_file(station.inbox / "frame.jpg", noise_jpeg(1))

        assert wait_for(lambda: process.poll() is not None, SETTLE_TIMEOUT)
        text = log.read_text(errors="replace")
        # Whichever comes first: the health check sees the file changed and exits 3, or a
        # batch touches a page past the new end (SIGBUS, with faulthandler's trace). The point
        # is what is left behind.
        if process.returncode == 3:
            assert "was rewritten in place while the daemon ran" in text
        else:
            assert process.returncode < 0
            assert "Bus error" in text
        assert (station.inbox / "frame.jpg").exists()
        # Still in the inbox, and queued if intake had recorded it: the restart takes it.
        assert query(station, "SELECT state FROM images") in ([], [("queued",)])
    finally:
        if process.poll() is None:
            process.kill()


def _copied_model(tmp_path: Path, tiny_model_dir: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    for source in tiny_model_dir.iterdir():
        (model / source.name).write_bytes(source.read_bytes())
    return model


def _replace_by_rename(weights: Path) -> None:
    fresh = weights.with_name("model.safetensors.new")
    fresh.write_bytes(weights.read_bytes())
    fresh.replace(weights)  # the safe way to update: a new file, renamed over the old name


def _touch_as_if_rewritten(weights: Path) -> None:
    # Same bytes and size, a new mtime: what an in-place rewrite leaves, without the SIGBUS a
    # real one risks while pages of the old content are mapped.
    info = weights.stat()
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (_replace_by_rename, "was replaced by another file"),
        (_touch_as_if_rewritten, "was rewritten in place"),
    ],
)
def test_a_changed_model_file_ends_the_daemon_for_a_restart_on_it(
    tmp_path: Path, tiny_model_dir: Path, change: Callable[[Path], None], said: str
) -> None:
    model = _copied_model(tmp_path, tiny_model_dir)
    station = make_station(tmp_path / "station", model)
    log = tmp_path / "daemon.log"
    process = start_daemon_process(station, log)
    try:
        assert wait_for(lambda: ready_lines(log) >= 1, PROCESS_START_TIMEOUT), log.read_text()
        change(model / "model.safetensors")
        assert wait_for(lambda: process.poll() is not None, SETTLE_TIMEOUT)
        assert process.returncode == 3  # the CLI's model error: systemd restarts it
        text = log.read_text(errors="replace")
        assert f"model weights file {model / 'model.safetensors'} {said}" in text
    finally:
        if process.poll() is None:
            process.kill()
