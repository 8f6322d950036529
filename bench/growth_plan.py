"""Growth: which camera took each generated frame, when, in which burst, and its events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

DEPLOYMENTS = 40  # cam00 .. cam39; code DEPLOYMENTS: a frame dropped directly in the inbox
NO_DEPLOYMENT_SHARE = 0.01  # of bursts
NO_EXIF = frozenset({38, 39})  # deployments whose camera writes no EXIF: a frame is its own event
BEHIND = 7  # the deployment whose clock is 12 h behind (clock_offset_seconds 43200)
UNKNOWN_ZONE = 30  # deployments from this one on have no timezone configured
CLOCK_OFFSET = 43_200.0
LOCAL = timedelta(hours=10)  # the station's cameras keep UTC+10 (Vladivostok)
BURST_SIZES = ((1, 0.3), (2, 0.2), (3, 0.2), (4, 0.15), (5, 0.15))
FRAME_SECONDS = 2.0  # between frames of a burst
# A burst is a tiger, something that may be one, or wind and snow; its frames' own decisions
# (negative, uncertain, positive) follow from that.
BURST_KINDS = ((0.012, (0.2, 0.2, 0.6)), (0.03, (0.5, 0.5, 0.0)), (0.958, (0.99, 0.01, 0.0)))
# Frames that fail whatever their burst: none, quarantined, vanished, retried (then classified).
FAILURES = (0.9865, 0.005, 0.0005, 0.008)
QUARANTINED, VANISHED, RETRIED = 1, 2, 3
DECISIONS = ("negative", "uncertain", "positive")
SCORE_RANGES = ((0.0, 0.2), (0.2, 0.5), (0.5, 1.0))

IntArray = npt.NDArray[np.int64]


def deployment_name(code: int) -> str | None:
    return None if code == DEPLOYMENTS else f"cam{code:02d}"


def clock_of(code: int) -> tuple[float, timedelta | None]:
    """A deployment's clock offset in seconds and the UTC offset its corrected clock keeps."""
    if code == DEPLOYMENTS:
        return 0.0, None  # frames without a deployment: nothing configured
    offset = CLOCK_OFFSET if code == BEHIND else 0.0
    return offset, (LOCAL if code < UNKNOWN_ZONE else None)


def deployments_config() -> dict[str, dict[str, object]]:
    """The station configuration's `deployments:` map that the generated clocks follow."""
    settings: dict[str, dict[str, object]] = {}
    for code in range(UNKNOWN_ZONE):
        offset, _zone = clock_of(code)
        settings[f"cam{code:02d}"] = {"timezone": "+10:00"} | (
            {"clock_offset_seconds": offset} if offset else {}
        )
    return settings


@dataclass(frozen=True)
class Events:
    """One entry per event, by id - 1, as daemon/storage/events.py leaves them once filed."""

    deployment: IntArray
    start: npt.NDArray[np.float64]  # corrected capture, seconds after the plan's origin; NaN: none
    end: npt.NDArray[np.float64]
    frame_count: IntArray
    max_score: npt.NDArray[np.float64]
    decision: IntArray  # index into DECISIONS: its best frame's
    last_frame: IntArray  # the frame classified last: updated_at


@dataclass(frozen=True)
class Plan:
    """Per frame (by index): deployment code, burst, own decision and score, failure, event."""

    deployment: IntArray
    position: IntArray  # its place in its burst
    decision: IntArray  # index into DECISIONS: the classification's own
    score: npt.NDArray[np.float64]
    failure: IntArray
    capture: npt.NDArray[np.float64]  # corrected capture, seconds after the origin; NaN: no EXIF
    event: IntArray  # events.id, 0: in none (never classified)
    events: Events

    def captured_at(self, index: int, origin: datetime) -> datetime | None:
        """The corrected camera-local capture time (naive), or None for a camera without EXIF."""
        seconds = float(self.capture[index])
        return None if np.isnan(seconds) else origin + timedelta(seconds=seconds)


def make_plan(
    rng: np.random.Generator, images: int, step: float, classified: npt.NDArray[np.bool_]
) -> Plan:
    """Bursts of 1-5 frames, each from one deployment, never the previous burst's (so a
    deployment's bursts are more than a minute apart), and the events the daemon makes of
    them. `classified`: which frames got a classification (not queued, not failed for good)."""
    sizes, firsts = _bursts(rng, images)
    burst = np.repeat(np.arange(len(sizes)), sizes)
    position = np.arange(images) - firsts[burst]
    deployment = _burst_deployments(rng, len(sizes))[burst]
    kind = rng.choice(len(BURST_KINDS), size=len(sizes), p=[k[0] for k in BURST_KINDS])[burst]
    decision = _decisions(rng, kind)
    failure = rng.choice(len(FAILURES), size=images, p=FAILURES)
    low = np.array([r[0] for r in SCORE_RANGES])[decision]
    high = np.array([r[1] for r in SCORE_RANGES])[decision]
    score = low + (high - low) * rng.random(images)
    capture = firsts[burst] * step + FRAME_SECONDS * position
    no_exif = np.isin(deployment, list(NO_EXIF))
    capture = np.where(no_exif, np.nan, capture)
    classified = classified & (failure != QUARANTINED) & (failure != VANISHED)
    event = _event_ids(position == 0, no_exif, classified)
    events = _events(event, deployment, capture, score, decision)
    return Plan(deployment, position, decision, score, failure, capture, event, events)


def _bursts(rng: np.random.Generator, images: int) -> tuple[IntArray, IntArray]:
    sizes = rng.choice([s for s, _ in BURST_SIZES], size=images, p=[p for _, p in BURST_SIZES])
    ends = np.cumsum(sizes)
    count = int(np.searchsorted(ends, images)) + 1
    sizes = sizes[:count].copy()
    sizes[-1] -= int(ends[count - 1]) - images
    firsts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return sizes.astype(np.int64), firsts.astype(np.int64)


def _burst_deployments(rng: np.random.Generator, bursts: int) -> IntArray:
    codes = rng.integers(0, DEPLOYMENTS, size=bursts)
    codes[rng.random(bursts) < NO_DEPLOYMENT_SHARE] = DEPLOYMENTS
    chosen = codes.tolist()
    for number in range(1, bursts):
        if chosen[number] == chosen[number - 1]:
            chosen[number] = (chosen[number] + 1) % (DEPLOYMENTS + 1)
    return np.array(chosen, dtype=np.int64)


def _decisions(rng: np.random.Generator, kind: IntArray) -> IntArray:
    """Each frame's own decision (0 negative, 1 uncertain, 2 positive) given its burst's kind."""
    shares: npt.NDArray[np.float64] = np.array([k[1] for k in BURST_KINDS])[kind]
    draw = rng.random(len(kind))
    above_negative = draw >= shares[:, 0]
    above_uncertain = draw >= shares[:, 0] + shares[:, 1]
    return above_negative.astype(np.int64) + above_uncertain.astype(np.int64)


def _event_ids(
    burst_start: npt.NDArray[np.bool_],
    no_exif: npt.NDArray[np.bool_],
    classified: npt.NDArray[np.bool_],
) -> IntArray:
    """Ids in the order the daemon creates events: one per burst, one per frame without a
    capture time; a group whose frames were never classified has no event."""
    group = np.cumsum(burst_start | no_exif) - 1
    has = np.zeros(int(group[-1]) + 1, dtype=bool)
    has[group[classified]] = True
    ids = np.where(has, np.cumsum(has), 0)
    return np.where(classified, ids[group], 0).astype(np.int64)


def _events(
    event: IntArray,
    deployment: IntArray,
    capture: npt.NDArray[np.float64],
    score: npt.NDArray[np.float64],
    decision: IntArray,
) -> Events:
    count = int(event.max(initial=0))
    frames = np.flatnonzero(event)
    slot = event[frames] - 1
    start = np.full(count, np.inf)
    end = np.full(count, -np.inf)
    np.fmin.at(start, slot, capture[frames])
    np.fmax.at(end, slot, capture[frames])
    best = np.full(count, -1.0)
    np.maximum.at(best, slot, score[frames])
    highest = np.zeros(count, dtype=np.int64)
    np.maximum.at(highest, slot, decision[frames])
    last = np.zeros(count, dtype=np.int64)
    np.maximum.at(last, slot, frames)
    first = np.full(count, len(event), dtype=np.int64)
    np.minimum.at(first, slot, frames)
    return Events(
        deployment=deployment[first],
        start=np.where(np.isinf(start), np.nan, start),
        end=np.where(np.isinf(end), np.nan, end),
        frame_count=np.bincount(slot, minlength=count).astype(np.int64),
        max_score=best,
        decision=highest,
        last_frame=last,
    )
