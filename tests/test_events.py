"""Deployments from paths, corrected capture times and events, on a real SQLite store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.config import ConfigError, parse_config
from daemon.config_deployments import Deployment, DeploymentsFrom, utc_offset
from daemon.outcomes import Decision
from daemon.storage.database import create_db_engine, upgrade_database
from daemon.storage.events import Clock, EventSettings
from daemon.storage.store import Arrival, ClassifiedImage, ModelInfo, Store

MODEL = ModelInfo("tiny", "r1", "fp32", (("a tiger", True),), 0.8, 0.5)
T0 = datetime(2026, 12, 1, 3, 0, 0)
INBOX = Path("/srv/inbox")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tigerwatch.db"


def make_store(db_path: Path, **settings: object) -> Store:
    url = f"sqlite:///{db_path}"
    upgrade_database(url)
    return Store(create_db_engine(url), events=EventSettings(**settings))  # type: ignore[arg-type]


def classify(
    store: Store, name: str, deployment: str | None, at: datetime | None, decision: Decision
) -> int:
    """One frame's way through the store: arrival with its deployment, then its result."""
    sha = f"{abs(hash((name, deployment))):064d}"[:64]
    store.record_arrivals([Arrival(f"/srv/inbox/{name}", sha, 10, deployment)])
    (item,) = [q for q in store.due_images(100) if q.sha256 == sha]
    score = {Decision.POSITIVE: 0.9, Decision.UNCERTAIN: 0.6, Decision.NEGATIVE: 0.1}[decision]
    result = ClassifiedImage(
        item.id, score, decision, {"a tiger": score}, b"\0" * 8, 2, 1.0, 1.0, at, None, None
    )
    store.record_classified([result], MODEL)
    return item.id


def rows(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as connection:
        return connection.execute(sql).fetchall()


# --- deployments from paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "relative", "expected"),
    [
        (DeploymentsFrom(), "cam3/DCIM/100/IMG_1.JPG", "cam3"),
        (DeploymentsFrom(), "IMG_1.JPG", None),
        (DeploymentsFrom(levels=2), "site/cam3/IMG_1.JPG", "site/cam3"),
        (DeploymentsFrom(levels=2), "cam3/IMG_1.JPG", None),
        (DeploymentsFrom(levels=0), "cam3/IMG_1.JPG", None),
        (DeploymentsFrom(pattern=r"(?P<deployment>cam\d+)"), "north/cam12/x.jpg", "cam12"),
        (DeploymentsFrom(pattern=r"^[^/]+/([^/]+)/"), "north/cam12/x.jpg", "cam12"),
        (DeploymentsFrom(pattern=r"cam\d+"), "upload/x.jpg", None),
    ],
)
def test_the_deployment_is_read_from_the_path_below_the_inbox(
    rule: DeploymentsFrom, relative: str, expected: str | None
) -> None:
    assert rule.deployment_of(INBOX / relative, (INBOX,)) == expected


def test_levels_and_pattern_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either levels or pattern"):
        DeploymentsFrom(levels=1, pattern="cam")


def test_a_camera_twelve_hours_behind_is_corrected_and_put_in_utc() -> None:
    deployment = Deployment(clock_offset_seconds=43200, timezone="+10:00")

    corrected = deployment.corrected(T0)

    assert corrected == T0 + timedelta(hours=12)
    assert deployment.in_utc(corrected) == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert utc_offset("UTC-03:30") == -timedelta(hours=3, minutes=30)
    with pytest.raises(ValueError, match="UTC offset"):
        Deployment(timezone="Asia/Vladivostok")


def test_both_capture_times_are_recorded_with_the_deployment(db_path: Path) -> None:
    clock = Clock(offset_seconds=43200, utc_offset=timedelta(hours=10))
    store = make_store(db_path, clocks={"cam3": clock})

    classify(store, "cam3/a.jpg", "cam3", T0, Decision.NEGATIVE)
    classify(store, "b.jpg", None, T0, Decision.NEGATIVE)

    assert rows(
        db_path,
        "SELECT deployment, capture_time, capture_time_corrected, capture_time_utc "
        "FROM images ORDER BY id",
    ) == [
        ("cam3", "2026-12-01 03:00:00.000000", "2026-12-01 15:00:00.000000",
         "2026-12-01 05:00:00.000000"),
        (None, "2026-12-01 03:00:00.000000", "2026-12-01 03:00:00.000000", None),
    ]  # fmt: skip


# --- events -----------------------------------------------------------------------------------


def test_a_burst_is_one_event_and_its_positive_lifts_the_unrouted_frames(db_path: Path) -> None:
    store = make_store(db_path)
    for second in (0, 2, 4):
        classify(
            store, f"cam1/{second}.jpg", "cam1", T0 + timedelta(seconds=second), Decision.NEGATIVE
        )
    classify(store, "cam1/6.jpg", "cam1", T0 + timedelta(seconds=6), Decision.POSITIVE)

    sql = "SELECT deployment, start_time, end_time, frame_count, decision FROM events"
    assert rows(db_path, sql) == [
        ("cam1", "2026-12-01 03:00:00.000000", "2026-12-01 03:00:06.000000", 4, "positive")
    ]
    decisions = rows(db_path, "SELECT decision, route_reason IS NOT NULL FROM images")
    assert decisions == [("positive", 1)] * 3 + [("positive", 0)]
    assert rows(db_path, "SELECT max_target_score FROM events") == [(0.9,)]


def test_frames_ten_minutes_apart_and_other_deployments_are_other_events(db_path: Path) -> None:
    store = make_store(db_path)
    classify(store, "cam1/a.jpg", "cam1", T0, Decision.POSITIVE)
    classify(store, "cam1/b.jpg", "cam1", T0 + timedelta(minutes=10), Decision.NEGATIVE)
    classify(store, "cam2/c.jpg", "cam2", T0 + timedelta(seconds=1), Decision.NEGATIVE)
    classify(store, "d.jpg", None, T0 + timedelta(seconds=2), Decision.NEGATIVE)
    classify(store, "cam1/e.jpg", "cam1", None, Decision.NEGATIVE)
    classify(store, "cam1/f.jpg", "cam1", None, Decision.NEGATIVE)

    events = rows(db_path, "SELECT count(DISTINCT event_id), count(*) FROM images")
    assert events == [(6, 6)]
    assert rows(db_path, "SELECT decision FROM images ORDER BY id") == [
        ("positive",), ("negative",), ("negative",), ("negative",), ("negative",), ("negative",)
    ]  # fmt: skip


def test_a_frame_between_two_events_merges_them(db_path: Path) -> None:
    store = make_store(db_path, gap_seconds=60.0)
    first = classify(store, "cam1/a.jpg", "cam1", T0, Decision.UNCERTAIN)
    classify(store, "cam1/b.jpg", "cam1", T0 + timedelta(seconds=100), Decision.NEGATIVE)
    assert rows(db_path, "SELECT count(*) FROM events") == [(2,)]

    classify(store, "cam1/c.jpg", "cam1", T0 + timedelta(seconds=50), Decision.NEGATIVE)

    assert rows(db_path, "SELECT id, frame_count, decision, start_time, end_time FROM events") == [
        (1, 3, "uncertain", "2026-12-01 03:00:00.000000", "2026-12-01 03:01:40.000000")
    ]  # fmt: skip
    assert rows(db_path, "SELECT DISTINCT event_id FROM images") == [(1,)]
    assert rows(db_path, f"SELECT decision FROM images WHERE id != {first}") == [("uncertain",)] * 2


def test_a_filed_frame_is_left_to_the_filing_pass(db_path: Path) -> None:
    store = make_store(db_path)
    early = classify(store, "cam1/a.jpg", "cam1", T0, Decision.NEGATIVE)
    store.record_intended(
        {(move.kind, move.id): "/srv/archive/a.jpg" for move in store.pending_moves()}
    )
    store.record_moved_many(
        [(move.kind, move.id, "/srv/archive/a.jpg") for move in store.pending_moves()]
    )

    classify(store, "cam1/b.jpg", "cam1", T0 + timedelta(seconds=2), Decision.POSITIVE)

    (event,) = store.events_to_file()
    assert (event.decision, len(event.frames)) == (Decision.POSITIVE, 2)
    filed = [frame for frame in event.frames if frame.image_id == early]
    assert [(frame.done, frame.decision, frame.final_path) for frame in filed] == [
        (True, "negative", "/srv/archive/a.jpg")
    ]
    assert store.event_filed(event)
    assert store.events_to_file() == []


def test_deployment_mistakes_are_named_at_their_key_path(tmp_path: Path) -> None:
    source = tmp_path / "tigerwatch.yaml"
    folders = {name: str(tmp_path / name) for name in ("inbox", "review", "archive", "quarantine")}
    data = {
        "paths": folders,
        "deployments_from": {"levels": 1, "pattern": "cam"},
        "deployments": {
            "cam3": {"timezone": "Asia/Tokyo", "latitude": 120, "clok_offset_seconds": 1}
        },
        "events": {"gap_seconds": 0},
    }

    with pytest.raises(ConfigError) as raised:
        parse_config(data, source=source)

    assert raised.value.problems == (
        f"{source}: deployments_from: give either levels or pattern, not both",
        f"{source}: deployments.cam3.latitude: must be at most 90",
        f"{source}: deployments.cam3.timezone: must be a UTC offset such as '+10:00', "
        "'-03:30' or 'UTC', not 'Asia/Tokyo'",
        f"{source}: deployments.cam3.clok_offset_seconds: unknown key "
        "(did you mean 'clock_offset_seconds'?)",
        f"{source}: events.gap_seconds: must be greater than 0",
    )


def test_one_batch_of_a_burst_makes_one_event_and_leaves_a_frame_no_longer_queued(
    db_path: Path,
) -> None:
    """The worker records a whole batch in one call: its frames join one another's event,
    and a frame quarantined meanwhile keeps its state (its classification is still kept)."""
    store = make_store(db_path)
    names = [f"IMG_{index}.JPG" for index in range(4)]
    store.record_arrivals(
        [
            Arrival(f"/srv/inbox/cam1/{name}", f"{index:064d}", 10, "cam1")
            for index, name in enumerate(names)
        ]
    )
    queued = sorted(store.due_images(100), key=lambda item: item.path)
    store.record_decode_failure(queued[3].id, "unreadable", give_up=True)
    decisions = [Decision.NEGATIVE, Decision.POSITIVE, Decision.NEGATIVE, Decision.NEGATIVE]
    results = [
        ClassifiedImage(
            item.id,
            0.5,
            decision,
            {"a tiger": 0.5},
            b"\0" * 8,
            2,
            1.0,
            1.0,
            T0 + timedelta(seconds=10 * index),
            None,
            None,
        )
        for index, (item, decision) in enumerate(zip(queued, decisions, strict=True))
    ]
    store.record_classified(results, MODEL)

    images = rows(db_path, "SELECT state, decision, event_id FROM images ORDER BY original_path")
    event = images[0][2]
    assert event is not None
    assert images[:3] == [("routing", "positive", event)] * 3  # lifted to the event's decision
    assert images[3] == ("routing", "quarantined", None)
    assert rows(db_path, "SELECT frame_count, decision FROM events") == [(3, "positive")]
    assert rows(db_path, "SELECT count(*) FROM classifications") == [(4,)]
