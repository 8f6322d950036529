"""A file whose image header is cut short is one bad file, not a worker that dies on every start."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_support import (
    Station,
    check_invariant,
    daemon_thread,
    make_station,
    query,
    settled,
)
from tests.faults.fault_kit import noise_jpeg, report, wait_until, write_file

pytestmark = pytest.mark.fault

# A PNG signature and the start of its IHDR chunk: an FTP upload cut after 19 bytes.
SHORT_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000")
SHORT_WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8L\x00"


@pytest.fixture
def station(tmp_path: Path, tiny_model_dir: Path) -> Station:
    return make_station(tmp_path / "station", tiny_model_dir)


def test_a_header_cut_short_is_quarantined_and_the_queue_goes_on(station: Station) -> None:
    write_file(station.inbox / "short.png", SHORT_PNG)
    write_file(station.inbox / "short.webp", SHORT_WEBP)
    good = write_file(station.inbox / "good_after.jpg", noise_jpeg(7))
    with daemon_thread(station):  # exits 0 on leaving, or the test fails
        wait_until(lambda: settled(station), "the stubs and the good frame to settle")
    rows = dict(query(station, "SELECT original_path, decision FROM images"))
    rejects = dict(query(station, "SELECT source_path, reason FROM rejects"))
    report("short headers", {"images": rows, "rejects": rejects})
    assert rows.get(str(good)) not in (None, "quarantined")
    assert all(
        rows.get(str(station.inbox / name)) == "quarantined" or str(station.inbox / name) in rejects
        for name in ("short.png", "short.webp")
    )
    assert check_invariant(station) == []
