"""(b) The daemon end to end, as a subprocess: time to READY, a burst of files, one file idle."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import yaml

from bench.harness import MIB, REPO_ROOT, BenchmarkError, Rate, say
from bench.inputs import BenchFile
from bench.meters import (
    RSS_POLL_SECONDS,
    BurstCpu,
    BurstCpuMeter,
    RssSampler,
    child_processes,
    vm_hwm_bytes,
)
from bench.settings import Settings

DB_POLL_SECONDS = 0.05


READY_TIMEOUT_SECONDS = 300.0


STOP_TIMEOUT_SECONDS = 60.0


IDLE_PAUSE_SECONDS = 2.0  # lets the worker fall idle before the single-file drop


SINGLE_FILE_TARGET_SECONDS = 3.0  # the bound, after the quiet period


@dataclass(frozen=True)
class DaemonResult:
    ready_seconds: float
    burst: Rate  # first drop to last file done, the quiet period included
    single_file_seconds: float
    peak_rss_bytes: int
    vm_hwm_bytes: int | None  # the daemon process itself
    children_vm_hwm_bytes: int  # sum of its children's own peaks (an upper bound together)
    decisions: dict[str, int]
    burst_cpu: BurstCpu
    quiet_seconds: float  # watch.quiet_seconds of the run

    @property
    def rate(self) -> Rate:
        """b: the burst without its quiet period. Every file waits the quiet period the station
        configures (5 s by default) before any work may start, as a lone file's latency is
        counted after it; left in, it would make b depend on the burst's length."""
        return Rate(self.burst.images, self.burst.seconds - self.quiet_seconds)


@dataclass(frozen=True)
class DaemonLayout:
    workdir: Path

    @property
    def staging(self) -> Path:
        return self.workdir / "staging"

    @property
    def inbox(self) -> Path:
        return self.workdir / "inbox"

    @property
    def database(self) -> Path:
        return self.workdir / "tigerwatch.db"

    @property
    def config(self) -> Path:
        return self.workdir / "tigerwatch.yaml"

    @property
    def log(self) -> Path:
        return self.workdir / "daemon.log"

    def folders(self) -> dict[str, Path]:
        names = ("staging", "inbox", "review", "archive", "quarantine")
        return {name: self.workdir / name for name in names}

    def reset(self) -> None:
        """Remove what an earlier run left (only the names this benchmark creates)."""
        for folder in self.folders().values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for path in self.workdir.glob("tigerwatch.db*"):
            path.unlink()


def write_daemon_config(layout: DaemonLayout, model_dir: Path, settings: Settings) -> None:
    folders = layout.folders()
    config = {
        "station": "throughput-bench",
        "paths": {
            "inbox": [str(folders["inbox"])],
            "review": str(folders["review"]),
            "archive": str(folders["archive"]),
            "quarantine": str(folders["quarantine"]),
        },
        "database": {"url": f"sqlite:///{layout.database}"},
        "model": {
            "name_or_path": str(model_dir),
            "batch_size": settings.batch_size,
            "precision": settings.precision,
            "view": settings.view,
            "device": "cpu",
        },
        "watch": {"quiet_seconds": settings.quiet_seconds},
        "logging": {"level": "WARNING"},
    }
    for section, key, value in settings.overrides:
        config.setdefault(section, {})[key] = value  # type: ignore[index]
    layout.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def stage(files: Sequence[BenchFile], staging: Path) -> list[Path]:
    """Hard-link (or copy, across filesystems) into staging, next to the inbox for renames."""
    staged = []
    for file in files:
        target = staging / file.inbox_name
        try:
            os.link(file.path, target)
        except OSError:
            shutil.copy2(file.path, target)
        staged.append(target)
    return staged


@contextlib.contextmanager
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket standing in for systemd's; the path is short (sun_path limit)."""
    path = f"/tmp/twbench-{os.getpid()}.sock"
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(0.25)
        yield sock, path
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def log_tail(layout: DaemonLayout, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(layout.log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def wait_ready(sock: socket.socket, process: subprocess.Popen[bytes], layout: DaemonLayout) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchmarkError(
                f"daemon exited with code {process.returncode} before READY=1; "
                f"log {layout.log}:\n{log_tail(layout)}"
            )
        try:
            message = sock.recv(4096).decode(errors="replace")
        except TimeoutError:
            continue
        if "READY=1" in message.splitlines():
            return
    raise BenchmarkError(f"no READY=1 within {READY_TIMEOUT_SECONDS:.0f} s")


def wait_done(
    db: sqlite3.Connection,
    count: int,
    process: subprocess.Popen[bytes],
    layout: DaemonLayout,
    timeout: float,
) -> float:
    """Poll the images table until `count` rows are done; return the monotonic time seen."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = db.execute("SELECT count(*) FROM images WHERE state = 'done'").fetchone()[0]
        if done >= count:
            return time.monotonic()
        if process.poll() is not None:
            raise BenchmarkError(
                f"daemon exited with code {process.returncode} after {done} of {count} "
                f"files; log {layout.log}:\n{log_tail(layout)}"
            )
        time.sleep(DB_POLL_SECONDS)
    raise BenchmarkError(
        f"only {done} of {count} files done after {timeout:.0f} s; log:\n{log_tail(layout)}"
    )


def drop(staged: Sequence[Path], inbox: Path) -> None:
    for path in staged:
        path.rename(inbox / path.name)  # same filesystem: atomic and instant


def decisions(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute("SELECT coalesce(decision, state), count(*) FROM images GROUP BY 1")
    return {str(name): int(count) for name, count in rows.fetchall()}


def start_daemon(layout: DaemonLayout, socket_path: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": socket_path, "PYTHONUNBUFFERED": "1"}
    with layout.log.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "-c", str(layout.config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop_daemon(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd does; kill it (and any decode children it left) if it hangs."""
    children = child_processes(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            say(f"  daemon did not stop {STOP_TIMEOUT_SECONDS:.0f} s after SIGTERM; killing it")
            process.kill()
            process.wait()
    for child in children:
        # psutil refuses to signal a pid that a new process has taken since it was listed.
        with contextlib.suppress(psutil.Error):
            if child.is_running():
                child.kill()
                say(f"  killed process {child.pid} that the daemon left behind")


def burst_timeout(count: int) -> float:
    return 120.0 + 2.0 * count  # generous: > 10x the slowest rate seen on 2 cores


def measure_daemon(
    layout: DaemonLayout,
    model_dir: Path,
    files: Sequence[BenchFile],
    single: BenchFile,
    settings: Settings,
) -> DaemonResult:
    """Start the daemon, drop every file at once, then one more into the idle daemon."""
    layout.reset()
    write_daemon_config(layout, model_dir, settings)
    staged = stage(files, layout.staging)
    staged_single = stage([single], layout.staging)
    with notify_socket() as (sock, socket_path):
        started = time.monotonic()
        process = start_daemon(layout, socket_path)
        sampler = RssSampler(process.pid)
        try:
            wait_ready(sock, process, layout)
            ready_seconds = time.monotonic() - started
            with contextlib.closing(sqlite3.connect(layout.database, isolation_level=None)) as db:
                meter = BurstCpuMeter(process.pid)
                burst = _timed_drop(db, staged, 0, process, layout)
                burst_cpu = meter.stop()
                time.sleep(IDLE_PAUSE_SECONDS)
                single_rate = _timed_drop(db, staged_single, len(staged), process, layout)
                found = decisions(db)
            hwm = vm_hwm_bytes(process.pid)
            children_hwm = sum(
                vm_hwm_bytes(child.pid) or 0 for child in child_processes(process.pid)
            )
        finally:
            stop_daemon(process)
            peak = sampler.stop()
    return DaemonResult(
        ready_seconds,
        burst,
        single_rate.seconds,
        peak,
        hwm,
        children_hwm,
        found,
        burst_cpu,
        settings.quiet_seconds,
    )


def _timed_drop(
    db: sqlite3.Connection,
    staged: Sequence[Path],
    done_before: int,
    process: subprocess.Popen[bytes],
    layout: DaemonLayout,
) -> Rate:
    started = time.monotonic()
    drop(staged, layout.inbox)
    finished = wait_done(db, done_before + len(staged), process, layout, burst_timeout(len(staged)))
    return Rate(len(staged), finished - started)


def report_daemon(result: DaemonResult, settings: Settings) -> None:
    quiet = settings.quiet_seconds
    share = quiet / result.burst.seconds if result.burst.seconds > 0 else float("inf")
    after_quiet = result.single_file_seconds - quiet
    verdict = "yes" if after_quiet <= SINGLE_FILE_TARGET_SECONDS else "NO"
    hwm = f"{result.vm_hwm_bytes / MIB:.0f} MiB" if result.vm_hwm_bytes is not None else "n/a"
    if result.children_vm_hwm_bytes:
        hwm += f" + children's {result.children_vm_hwm_bytes / MIB:.0f} MiB"
    say(f"  start to READY=1:      {result.ready_seconds:.1f} s")
    say(
        f"  burst:                 {result.burst.images} files in {result.burst.seconds:.1f} s "
        f"= {result.burst.per_second:.2f} images/s (first drop to last file done)"
    )
    say(
        f"  b:                     {result.rate.seconds:.1f} s = "
        f"{result.rate.per_second:.2f} images/s (the burst less its {quiet:g} s quiet period)"
    )
    cpu = result.burst_cpu
    say(
        f"  CPU in the burst:      daemon process {cpu.daemon_seconds:.1f} s + decoder "
        f"processes {cpu.decoder_seconds:.1f} s = {cpu.per_image_ms(result.burst.images):.1f} ms "
        f"per image; the machine was idle {cpu.idle_fraction:.0%} of the time"
    )
    say(f"  quiet period:          {quiet:g} s = {share:.1%} of the burst time")
    if share >= 0.1:
        say("  WARNING: the quiet period is not under a tenth of the burst; use more --frames")
    say(
        f"  single file, idle:     {result.single_file_seconds:.2f} s drop to done = "
        f"{after_quiet:.2f} s after the quiet period (within {SINGLE_FILE_TARGET_SECONDS:g} s: "
        f"{verdict})"
    )
    say(
        f"  peak RSS:              {result.peak_rss_bytes / MIB:.0f} MiB = "
        f"{result.peak_rss_bytes / 1e9:.3f} GB (psutil, process + "
        f"children, every {RSS_POLL_SECONDS * 1000:.0f} ms); VmHWM at the end {hwm}"
    )
    say(f"  outcomes:              {result.decisions}")
