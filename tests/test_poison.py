"""A poison image (decoder hangs or dies) is bounded, quarantined, and the queue goes on."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
from PIL import Image

import daemon.service
from daemon.decode.pool import DecoderPool
from tests.daemon_support import (
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
    wait_for,
)
from tests.poison_decoders import poisoned_decode


def _jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (seed * 40 % 256, 90, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_poison_images_are_quarantined_and_the_rest_goes_on(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        daemon.service, "DecoderPool", functools.partial(DecoderPool, job_function=poisoned_decode)
    )
    station = make_station(
        tmp_path / "station",
        tiny_model_dir,
        worker={
            "decode_timeout_seconds": 1.0,
            "max_decode_attempts": 2,
            "retry_delay_seconds": 0.2,
            "batch_max_wait_seconds": 0.2,
            "destination_retry_seconds": 0.5,
        },
    )
    (station.inbox / "hang.jpg").write_bytes(_jpeg(1))
    (station.inbox / "crash.jpg").write_bytes(_jpeg(2))
    good = [station.inbox / f"good{index}.jpg" for index in range(6)]
    with daemon_thread(station):
        for index, path in enumerate(good):
            path.write_bytes(_jpeg(10 + index))
        assert wait_for(lambda: settled(station), timeout=60), "the queue did not drain"

    rows = dict(query(station, "SELECT original_name, decision FROM images"))
    assert rows.pop("hang.jpg") == "quarantined"
    assert rows.pop("crash.jpg") == "quarantined"
    assert set(rows) == {path.name for path in good}
    assert "quarantined" not in rows.values()
    errors = dict(query(station, "SELECT original_name, last_error FROM images"))
    assert "longer than 1 s" in str(errors["hang.jpg"])
    assert "SIGSEGV" in str(errors["crash.jpg"])
    notes = {path.name for path in (station.root / "quarantine").rglob("*.txt")}
    assert notes == {"hang.jpg.txt", "crash.jpg.txt"}
    assert check_invariant(station) == []
