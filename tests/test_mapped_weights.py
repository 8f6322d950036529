"""The model file changed under a running daemon, whose image tower maps its weights."""

from __future__ import annotations

from pathlib import Path

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


def test_a_model_file_truncated_under_the_daemon_kills_it_with_a_trace_and_loses_nothing(
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
        assert process.returncode < 0  # SIGBUS; the point is what is left behind
        assert "Bus error" in log.read_text(errors="replace")
        assert (station.inbox / "frame.jpg").exists()
        assert query(station, "SELECT state FROM images") == [("queued",)]
    finally:
        if process.poll() is None:
            process.kill()
