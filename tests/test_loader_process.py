"""The loader child: what it sends back, how its failures reach the daemon, and the prefetch."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from daemon import child_interpreter
from daemon.classify.checkpoint import all_prompts
from daemon.classify.errors import ModelLoadError
from daemon.classify.loader_process import load_checkpoint, prefetch_for_config
from daemon.config import DEFAULT_LABELS, Config
from daemon.decode.preprocess import spec_from_processor
from tests.daemon_support import (
    PROCESS_START_TIMEOUT,
    make_station,
    returns_within,
    start_daemon_process,
    stop_daemon_process,
    wait_for,
)

PROMPTS = ("a photo of a tiger", "a photo of a cat")


def test_the_child_sends_what_the_tower_and_prompts_need(tiny_model_dir: Path) -> None:
    from transformers import CLIPConfig, CLIPProcessor

    parts = load_checkpoint(str(tiny_model_dir), PROMPTS)

    config = CLIPConfig.from_pretrained(str(tiny_model_dir))
    processor = CLIPProcessor.from_pretrained(str(tiny_model_dir), backend="pil")
    assert parts.text_embeddings.shape == (len(PROMPTS), config.projection_dim)
    assert parts.text_embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(parts.text_embeddings, axis=1), 1.0, atol=1e-6)
    assert parts.preprocess_spec == spec_from_processor(processor.image_processor)
    assert parts.input_size == config.vision_config.image_size
    assert parts.tower.hidden_size == config.vision_config.hidden_size
    assert parts.tower.projection_dim == config.projection_dim
    assert Path(parts.weights_path) == tiny_model_dir / "model.safetensors"


def test_a_child_that_dies_is_a_clear_load_error(
    monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    monkeypatch.setattr(
        child_interpreter,
        "_BOOTSTRAP",
        "import sys\nsys.stderr.write('out of memory\\n')\nsys.exit(7)",
    )

    with pytest.raises(ModelLoadError) as error:
        load_checkpoint(str(tiny_model_dir), PROMPTS)

    message = str(error.value)
    assert f"Cannot load CLIP model {str(tiny_model_dir)!r}" in message
    assert "exit code 7" in message
    assert "out of memory" in message  # the end of what it wrote


def test_the_childs_load_error_is_raised_with_its_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelLoadError) as error:
        load_checkpoint(str(missing), PROMPTS)

    assert str(error.value).startswith(f"Cannot load CLIP model {str(missing)!r}: folder ")
    assert "does not exist" in str(error.value)


def test_the_childs_output_does_not_reach_the_daemons_stderr(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    # Makes the child's interpreter write a line to stderr for every module it imports.
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")

    load_checkpoint(str(tiny_model_dir), PROMPTS)

    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def station_config(tmp_path: Path, model_dir: Path) -> Config:
    return make_station(tmp_path / "station", model_dir).config()


def test_prefetch_serves_the_next_load_of_that_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    config = station_config(tmp_path, tiny_model_dir)
    prefetch_for_config(config)
    # A second child would now fail: only the prefetched outcome can answer.
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import sys\nsys.exit(9)")

    parts = load_checkpoint(str(tiny_model_dir), all_prompts(config.labels))

    assert len(parts.text_embeddings) == len(all_prompts(DEFAULT_LABELS))
    with pytest.raises(ModelLoadError, match="exit code 9"):
        load_checkpoint(str(tiny_model_dir), all_prompts(config.labels))


def test_prefetch_keeps_a_load_error_for_the_load(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = station_config(tmp_path, tiny_model_dir)
    missing = str(tmp_path / "gone")
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"name_or_path": missing})}
    )

    prefetch_for_config(config)  # no error yet: the daemon's start-up reports it

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_checkpoint(missing, all_prompts(config.labels))


def test_the_childs_log_records_are_logged_by_the_daemon(caplog: pytest.LogCaptureFixture) -> None:
    from multiprocessing import Pipe

    from daemon.child_interpreter import LogForward, relay_until_reply
    from daemon.classify.loader_child import ERROR

    parent_end, child_end = Pipe()
    source = logging.getLogger("daemon.classify.loading.test")
    forward = LogForward(child_end)
    source.addHandler(forward)
    source.setLevel(logging.INFO)  # as serve() sets the child's `daemon` logger
    try:
        source.info("CLIP x is not in the Hugging Face cache; downloading it")
    finally:
        source.removeHandler(forward)
        source.setLevel(logging.NOTSET)
    child_end.send((ERROR, "Cannot load CLIP model 'x': ..."))
    caplog.clear()  # only what the parent logs counts

    with caplog.at_level(logging.INFO, logger="daemon"):
        reply = relay_until_reply(parent_end)

    assert reply == (ERROR, "Cannot load CLIP model 'x': ...")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "daemon.classify.loading.test",
            logging.INFO,
            "CLIP x is not in the Hugging Face cache; downloading it",
        )
    ]


def test_a_stop_during_the_prefetch_ends_the_wait_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    config = station_config(tmp_path, tiny_model_dir)
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import time\ntime.sleep(600)")
    stop = threading.Event()
    stop.set()

    assert returns_within(lambda: prefetch_for_config(config, stop), 60)

    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import sys\nsys.exit(9)")
    with pytest.raises(ModelLoadError, match="exit code 9"):  # a fresh child: none kept
        load_checkpoint(str(tiny_model_dir), all_prompts(config.labels))


def test_a_child_still_reading_is_said_in_the_log_until_it_ends(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = station_config(tmp_path, tiny_model_dir)
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", "import time\ntime.sleep(600)")
    monkeypatch.setattr(child_interpreter, "STILL_WORKING_SECONDS", 0.2)
    stop = threading.Event()

    def stop_after_two_warnings() -> bool:
        if len([r for r in caplog.records if "still reading" in r.getMessage()]) >= 2:
            stop.set()
        return stop.is_set()

    with caplog.at_level(logging.INFO, logger="daemon"):
        prefetching = threading.Thread(target=prefetch_for_config, args=(config, stop))
        prefetching.start()
        assert wait_for(stop_after_two_warnings, timeout=60)
        prefetching.join(60)

    messages = [r.getMessage() for r in caplog.records]
    assert not prefetching.is_alive()
    assert any(
        m.startswith(f"reading CLIP model {tiny_model_dir} in a child process (pid ")
        for m in messages
    )
    still = [
        m for m in messages if m.startswith(f"still reading CLIP model {tiny_model_dir} after")
    ]
    assert len(still) >= 2


# Takes sys.path as the real bootstrap does, then sends a log record every 50 ms for 20 s.
_CHATTY_CHILD = (
    "import sys, time\n"
    "from multiprocessing.connection import Connection\n"
    "connection = Connection({fd})\n"
    "sys.path[:] = connection.recv()\n"
    "connection.recv()\n"
    "end = time.monotonic() + 20\n"
    "while time.monotonic() < end:\n"
    "    connection.send(('log', ('daemon.classify.loading', 20, 'fetching a shard')))\n"
    "    time.sleep(0.05)\n"
)


def test_a_stop_ends_the_wait_for_a_child_that_keeps_logging(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # hX4: the stop and the "still reading" line were looked at only after 0.2 s without a
    # message, so a child that kept talking held a stop off for as long as it talked.
    config = station_config(tmp_path, tiny_model_dir)
    monkeypatch.setattr(child_interpreter, "_BOOTSTRAP", _CHATTY_CHILD)
    monkeypatch.setattr(child_interpreter, "STILL_WORKING_SECONDS", 0.3)
    stop = threading.Event()

    def said_still_reading() -> bool:
        return any("still reading" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="daemon"):
        prefetching = threading.Thread(target=prefetch_for_config, args=(config, stop))
        prefetching.start()
        assert wait_for(said_still_reading, timeout=15)
        stop.set()

        assert returns_within(lambda: prefetching.join(15), 10)
    assert not prefetching.is_alive()


def test_the_child_ignores_a_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    (tmp_path / "multiprocessing.py").write_text("raise SystemExit('imported from the cwd')\n")
    monkeypatch.chdir(tmp_path)

    parts = load_checkpoint(str(tiny_model_dir), ("a tiger",))

    assert len(parts.text_embeddings) == 1


def test_sigterm_stops_a_daemon_whose_loader_child_hangs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    station = make_station(tmp_path / "station", tiny_model_dir)
    process = start_daemon_process(station, tmp_path / "daemon.log")
    try:
        # The loader's child, not the start-up migration's (which a stop waits for, by design).
        assert wait_for(lambda: bool(_loader_children(process.pid)), PROCESS_START_TIMEOUT)
        child = _loader_children(process.pid)[0]
        os.kill(child, signal.SIGSTOP)  # a child stuck on a dead mount or a stalled download

        assert stop_daemon_process(process) == 0
        assert wait_for(lambda: not Path(f"/proc/{child}").exists(), 30), "child left behind"
    finally:
        if process.poll() is None:
            process.kill()


def _children(pid: int) -> list[int]:
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in listing.read_text().split()] if listing.exists() else []


def _loader_children(pid: int) -> list[int]:
    return [child for child in _children(pid) if b"loader_child" in _command_line(child)]


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""
