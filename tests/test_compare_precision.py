"""tigerwatch compare-precision: the station's classified frames, re-classified per precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.classify import cpu_caps
from daemon.classify.compare import compare_precisions, runnable_precisions
from daemon.config import load_config
from daemon.outcomes import Decision
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.store import Arrival, ClassifiedImage, ModelInfo, Store
from tests.test_cli import make_jpeg, run_cli, write_config

MODEL = ModelInfo("tiny", "r1", "fp32", (("a tiger", True),), 0.5, 0.2)


def classified_and_moved(store: Store, source: Path, final: Path, sha: str) -> None:
    """The store's own steps for one frame: arrival, classification, intended move, move."""
    store.record_arrivals([Arrival(str(source), sha, source.stat().st_size)])
    (image_id,) = [item.id for item in store.due_images(1)]
    result = ClassifiedImage(
        image_id, 0.1, Decision.NEGATIVE, {"a tiger": 0.1}, np.zeros(2, "<f4").tobytes(), 2,
        1.0, 1.0, None, None, None,
    )  # fmt: skip
    store.record_classified([result], MODEL)
    (move,) = store.pending_moves()
    store.record_intended({(move.kind, move.id): str(final)})
    source.rename(final)
    store.record_moved_many([(move.kind, move.id, str(final))])


@pytest.fixture
def station(
    tmp_path: Path, tiny_model_dir: Path, default_labels: list[str], default_targets: list[bool]
) -> Path:
    """A config whose database holds three classified frames, now in the archive, and one
    frame still queued (never classified: compare-precision must leave it out)."""
    config_file = write_config(tmp_path, tiny_model_dir, default_labels, default_targets)
    url = load_config(config_file).database.url
    upgrade_database(url)
    store = Store(create_db_engine(url))
    (tmp_path / "inbox").mkdir()
    (tmp_path / "archive").mkdir()
    for seed in range(3):
        source = make_jpeg(tmp_path / "inbox" / f"f{seed}.jpg", seed)
        classified_and_moved(store, source, tmp_path / "archive" / f"f{seed}.jpg", f"{seed:064x}")
    queued = make_jpeg(tmp_path / "inbox" / "queued.jpg", 9)
    store.record_arrivals([Arrival(str(queued), "f" * 64, queued.stat().st_size)])
    return config_file


def test_each_runnable_precision_reports_speed_and_changes_against_fp32(station: Path) -> None:
    reports, failed = compare_precisions(
        load_config(station), sorted((station.parent / "archive").glob("*.jpg"))
    )

    assert [r.precision for r in reports] == runnable_precisions("cpu")
    assert failed == []
    fp32 = reports[0]
    assert (fp32.precision, fp32.images, fp32.changed) == ("fp32", 3, 0)
    for report in reports:
        assert report.images == 3 and report.images_per_second > 0
        assert 0 <= report.changed <= 3


def test_bf16_is_offered_only_where_the_cpu_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(cpu_caps, "CPUINFO", cpuinfo)
    cpuinfo.write_text("flags\t: sse2 avx2\n")
    assert runnable_precisions("cpu") == ["fp32", "int8"]
    cpuinfo.write_text("flags\t: sse2 avx2 avx512f avx512_bf16\n")
    assert runnable_precisions("cpu") == ["fp32", "int8", "bf16"]


def test_the_command_reads_the_frames_from_their_final_paths(
    capsys: pytest.CaptureFixture[str], station: Path
) -> None:
    (station.parent / "archive" / "f2.jpg").write_bytes(b"not a jpeg any more")

    run = run_cli(capsys, "compare-precision", "-c", station, "--sample", "10")

    assert run.code == 0
    lines = run.out.strip().splitlines()
    assert lines[0].startswith("precision")
    fp32 = lines[1].split()
    assert (fp32[0], fp32[1], fp32[3]) == ("fp32", "2", "0")  # 2 readable of 3 classified
    assert len(lines) == 1 + len(runnable_precisions("cpu"))
    assert "f2.jpg" in run.err and "skipped" in run.err


def test_progress_per_precision_goes_to_stderr_and_the_table_to_stdout(
    station: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = run_cli(capsys, "compare-precision", "-c", station, "--sample", "10")

    assert run.code == 0, run.err
    assert run.out.startswith("precision  images") and "compare " not in run.out
    for precision in runnable_precisions("cpu"):
        last = [line for line in run.err.splitlines() if line.startswith(f"compare {precision}:")]
        assert last and last[-1].startswith(f"compare {precision}: 3/3 files (100%)"), run.err
