"""Progress of long CLI work: a bar on a terminal, plain lines otherwise, never on stdout."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import re
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main
from daemon.cli_progress import track
from tests.daemon_support import Station, make_station
from tests.staff_support import add_frames
from tests.test_cli import REPO_ROOT, make_jpeg, write_config

PLAIN = re.compile(
    r"^(?P<what>[\w -]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\), "
    r"(?P<rate>\d+\.\d) (?P=unit)/s, (?:about \d+ s left|done in \d+ s)$"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI reconfigures the root logger onto capsys's stream; give later tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def progress_lines(err: str, what: str) -> list[re.Match[str]]:
    found = [PLAIN.match(line) for line in err.splitlines() if line.startswith(f"{what}:")]
    assert found and all(found), err
    return [match for match in found if match is not None]


def test_plain_lines_at_each_further_tenth_or_after_five_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = [100.0]
    for item in track(range(20), "work", 20, clock=lambda: now[0]):
        now[0] += 6.0 if item == 4 else 1.0  # the fifth item takes longer than a line's interval

    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    # A tenth is 2 items; the slow fifth item gives a line of its own after 6 s; the end, one.
    assert [int(m["done"]) for m in progress_lines(captured.err, "work")] == [
        2, 4, 5, 7, 9, 11, 13, 15, 17, 19, 20,
    ]  # fmt: skip
    assert lines[2] == "work: 5/20 files (25%), 0.5 files/s, about 30 s left"
    assert lines[-1] == "work: 20/20 files (100%), 0.8 files/s, done in 25 s"


def test_nothing_is_shown_for_no_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(track([], "work", 0)) == []
    assert capsys.readouterr() == ("", "")


def test_classify_json_keeps_stdout_clean_and_reports_progress_on_stderr(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    tiny_model_dir: Path,
    default_labels: list[str],
    default_targets: list[bool],
) -> None:
    config = write_config(tmp_path, tiny_model_dir, default_labels, default_targets)
    (tmp_path / "images").mkdir()
    images = [make_jpeg(tmp_path / "images" / f"f{seed:02d}.jpg", seed) for seed in range(12)]

    code = main(["classify", "-c", str(config), "--json", *map(str, images)])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [entry["path"] for entry in json.loads(captured.out)] == list(map(str, images))
    lines = progress_lines(captured.err, "classify")
    done = [int(m["done"]) for m in lines]
    assert done == sorted(set(done)) and done[-1] == 12
    assert {(m["total"], m["unit"]) for m in lines} == {("12", "files")}
    assert lines[-1]["pct"] == "100" and "done in" in lines[-1][0]


def test_classify_on_a_terminal_draws_a_bar_and_stdout_stays_json(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> None:
    config = write_config(tmp_path, tiny_model_dir, default_labels, default_targets)
    (tmp_path / "images").mkdir()
    images = [make_jpeg(tmp_path / "images" / f"f{seed}.jpg", seed) for seed in range(6)]
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    command = [sys.executable, "-m", "daemon", "classify", "-c", str(config), "--json"]
    with subprocess.Popen(
        [*command, *map(str, images)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=child_side,
    ) as process:
        os.close(child_side)
        shown = _read_terminal(terminal, deadline=time.monotonic() + 180)
        out = process.stdout.read() if process.stdout else b""
        assert process.wait(timeout=60) == 0, shown

    assert re.search(r"classify: 100%\|[█#]+\| 6/6 \[", shown), shown
    assert "\r" in shown  # redrawn in place, not line after line
    assert "files/s," not in shown  # not the plain lines
    assert [entry["path"] for entry in json.loads(out)] == list(map(str, images))


def test_a_terminal_that_reports_no_size_still_gets_a_bar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal, our_side = (
        pty.openpty()
    )  # a fresh pseudo-terminal reports 0 x 0, as serial consoles do
    with os.fdopen(our_side, "w", encoding="utf-8") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(track(range(3), "work", 3)) == [0, 1, 2]
    shown = _read_terminal(terminal, deadline=time.monotonic() + 10)
    assert re.search(r"work: 100%\|[█#]+\| 3/3 \[", shown), repr(shown)


def _read_terminal(fd: int, deadline: float) -> str:
    """Everything written to the terminal until its last writer closes it."""
    chunks = []
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child has exited and closed its side
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def test_audit_reports_the_frames_linked_on_stderr(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    add_frames(station, [0.1] * 30)
    code = main(["audit", "-c", str(station.config_path), "--sample", "10", "--seed", "1"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("linked 10 of 30") and "audit:" not in captured.out
    lines = progress_lines(captured.err, "audit")
    assert (lines[-1]["done"], lines[-1]["total"], lines[-1]["unit"]) == ("10", "10", "frames")


def test_adapt_reports_its_folds_on_stderr(
    station: Station, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = add_frames(station, [0.7] * 6 + [0.1] * 6)
    rng = np.random.default_rng(0)
    with sqlite3.connect(station.db_path) as connection:
        for image_id in range(1, 13):
            vector = rng.normal(size=16).astype("<f4") + (1.0 if image_id <= 6 else -1.0)
            connection.execute(
                "UPDATE classifications SET embedding = ? WHERE image_id = ?",
                (vector.tobytes(), image_id),
            )
    config = str(station.config_path)
    assert main(["verdict", "-c", config, "--tiger", *map(str, paths[:6])]) == 0
    assert main(["verdict", "-c", config, "--not-tiger", *map(str, paths[6:])]) == 0
    capsys.readouterr()

    code = main(["adapt", "-c", config, "--min-verdicts", "3"])

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "cross-validated on 5 folds" in captured.out and "adapt:" not in captured.out
    lines = progress_lines(captured.err, "adapt")
    assert (lines[-1]["done"], lines[-1]["total"], lines[-1]["unit"]) == ("5", "5", "folds")
