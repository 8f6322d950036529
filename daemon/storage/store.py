"""The daemon's durable queue: every read and write of the database goes through here."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, Select, bindparam, func, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from daemon.outcomes import Decision
from daemon.storage.activity import Activity, is_open
from daemon.storage.events import EventSettings, assign_event
from daemon.storage.pending import PendingMove as PendingMove  # re-exported: the routers' unit
from daemon.storage.pending import pending_moves
from daemon.storage.refiles import Refiles
from daemon.storage.results import classification_row
from daemon.storage.schema import (
    Classification,
    Duplicate,
    Image,
    ImageDecision,
    ImageState,
    MoveState,
    Reject,
    utcnow,
)
from daemon.storage.schema import RowKind as RowKind  # re-exported: the routers' vocabulary
from daemon.storage.stuck import StuckMoves, clear_stuck, clear_stuck_many
from daemon.storage.transactions import StoreUnavailable as StoreUnavailable  # re-exported
from daemon.storage.transactions import Transactions

logger = logging.getLogger(__name__)


class ArrivalOutcome(StrEnum):
    NEW = "new"  # first time this content is seen: queued for classification
    DUPLICATE = "duplicate"  # same bytes as an earlier image: to the duplicates folder
    ALREADY_KNOWN = "already_known"  # this very file is already waiting: nothing to do


@dataclass(frozen=True)
class Arrival:
    """A stable inbox file and the SHA-256 of its content, ready to be recorded."""

    path: str
    sha256: str
    size: int
    deployment: str | None = None  # from the path it arrived by


@dataclass(frozen=True)
class QueuedImage:
    id: int
    sha256: str
    path: str
    attempts: int


@dataclass(frozen=True)
class ClassifiedImage:
    """What the worker learned about one image, committed as one unit."""

    image_id: int
    target_score: float
    decision: Decision
    probabilities: dict[str, float]
    embedding: bytes
    embedding_dim: int
    decode_ms: float
    inference_ms: float
    capture_time: datetime | None
    camera_make: str | None
    camera_model: str | None
    infrared: bool | None = None  # grey (night infrared) content, judged from the pixels
    # Info strip rows cut (top, bottom), in the original's pixels; None: not looked for.
    strips: tuple[int, int] | None = None
    # (positive, uncertain) this image was decided with (infrared frames have their own);
    # None: the ModelInfo's.
    thresholds: tuple[float, float] | None = None
    head_id: int | None = None  # the trained head whose score decided; None: zero-shot


@dataclass(frozen=True)
class ModelInfo:
    name: str
    revision: str
    precision: str
    labels: tuple[tuple[str, bool], ...]
    positive_threshold: float
    uncertain_threshold: float


class Store(Transactions, StuckMoves, Activity, Refiles):
    def __init__(self, engine: Engine, events: EventSettings | None = None) -> None:
        super().__init__(engine)
        self._events = events or EventSettings()

    # --- intake -------------------------------------------------------------------------------

    def waiting_among(self, paths: Iterable[str]) -> set[str]:
        """The paths among `paths` that already have a row that has not left the inbox yet,
        asked together: a burst's thousands of paths in a few statements, not one each."""
        asked = list(dict.fromkeys(paths))
        found: set[str] = set()
        with self._reading() as session:
            for start in range(0, len(asked), _PATHS_PER_STATEMENT):
                chunk = asked[start : start + _PATHS_PER_STATEMENT]
                for model, column in _INBOX_PATHS:
                    query = select(column).where(column.in_(chunk), model.state != "done")
                    found.update(session.scalars(query))
        return found

    def record_arrivals(self, arrivals: Sequence[Arrival]) -> list[ArrivalOutcome]:
        """Record stable inbox files in one transaction (one fsync), in order.

        Nothing is lost when this never commits: the files are still in the inbox and the next
        scan finds them again.
        """
        with self._writing() as session:
            # One query for the slice's hashes, not one each (with a flush before each): the
            # intake thread holds the GIL the model lanes need while SQLAlchemy works.
            hashes = {arrival.sha256 for arrival in arrivals}
            known = {
                image.sha256: image
                for image in session.scalars(select(Image).where(Image.sha256.in_(hashes)))
            }
            return [self._record_arrival(session, arrival, known) for arrival in arrivals]

    def _record_arrival(
        self, session: Session, arrival: Arrival, known: dict[str, Image]
    ) -> ArrivalOutcome:
        """`known`: the images of the slice's hashes, by hash; a new image is added to it, so
        a later arrival with the same bytes finds it."""
        path, sha256, size = arrival.path, arrival.sha256, arrival.size
        image = known.get(sha256)
        if image is None:
            known[sha256] = _new_image(path, sha256, size, arrival.deployment)
            session.add(known[sha256])
            return ArrivalOutcome.NEW
        if self._waiting_here(session, image, path):
            return ArrivalOutcome.ALREADY_KNOWN
        if image.state == ImageState.QUEUED and not _still_there(image):
            # Renamed inside the inbox before it was read (a person tidying, an FTP client
            # renaming after upload), its old name perhaps taken by the next card's frame: the
            # same frame under a new name, never a duplicate of itself, or it would go to
            # archive/duplicates unclassified.
            image.original_path, image.original_name = path, path.rsplit("/", 1)[-1]
            image.deployment = arrival.deployment
            return ArrivalOutcome.NEW
        if image.decision == ImageDecision.VANISHED:
            # Its file left before it was sorted: this copy takes its place, or the frame
            # would be filed as a duplicate of an image that was never looked at or kept.
            _revive(session, image, path, size)
            image.deployment = arrival.deployment
            return ArrivalOutcome.NEW
        if image.id is None:
            session.flush()  # an image of this same slice: its id, for the duplicate's link
        session.add(Duplicate(image_id=image.id, source_path=path, state=MoveState.ROUTING))
        return ArrivalOutcome.DUPLICATE

    @staticmethod
    def _waiting_here(session: Session, image: Image, path: str) -> bool:
        if image.original_path == path and image.state != ImageState.DONE:
            return True
        query = select(Duplicate.id).where(
            Duplicate.source_path == path, Duplicate.state == MoveState.ROUTING
        )
        return session.scalar(query.limit(1)) is not None

    def record_reject(self, path: str, reason: str) -> None:
        with self._writing() as session:
            session.add(Reject(source_path=path, reason=reason, state=MoveState.ROUTING))

    # --- classification -----------------------------------------------------------------------

    def due_images(self, limit: int, exclude: Iterable[int] = ()) -> list[QueuedImage]:
        excluded = set(exclude)
        query = select(Image).where(Image.state == ImageState.QUEUED).order_by(Image.id)
        if excluded:
            query = query.where(Image.id.not_in(excluded))
        with self._reading() as session:
            rows = session.scalars(query.limit(limit)).all()
            return [
                QueuedImage(row.id, row.sha256, row.original_path, row.attempts) for row in rows
            ]

    def record_classified(self, results: Sequence[ClassifiedImage], model: ModelInfo) -> None:
        """Commit the results of one batch together: an image is classified once or not at all.

        The batch's images are read in one query and changed as objects, so that the rows are
        written in few statements: the worker holds the GIL the model lanes need meanwhile.
        """
        labels = [{"text": text, "target": target} for text, target in model.labels]
        with self._writing() as session:
            session.add_all(classification_row(result, model, labels) for result in results)
            ids = [result.image_id for result in results]
            images = {image.id: image for image in session.scalars(_images_by_id(ids))}
            for result in results:
                image = images.get(result.image_id)
                if image is None or image.state != ImageState.QUEUED:
                    continue  # closed meanwhile (vanished, quarantined): its classification is kept
                _apply_result(image, result)
                assign_event(session, image, result.decision, result.target_score, self._events)

    def record_decode_failure(self, image_id: int, error: str, *, give_up: bool) -> int:
        """Count a failed attempt; when giving up, the image is routed to quarantine."""
        with self._writing() as session:
            image = session.get_one(Image, image_id)
            image.attempts += 1
            image.last_error = error
            if give_up:
                image.state = ImageState.ROUTING
                image.decision = ImageDecision.QUARANTINED
            return image.attempts

    def record_vanished(self, image_id: int, reason: str, path: str) -> bool:
        """Close an image whose file left `path`; False when it was meanwhile found under
        another name (renamed in the inbox), and stays queued to be read from there."""
        with self._writing() as session:
            image = session.get_one(Image, image_id)
            if image.original_path != path:
                return False
            image.state = ImageState.DONE
            image.decision = ImageDecision.VANISHED
            image.last_error = reason
            image.done_at = utcnow()
            return True

    # --- moves ----------------------------------------------------------------------------------

    def pending_moves(self) -> list[PendingMove]:
        with self._reading() as session:
            return pending_moves(session)

    def record_intended(self, intended: dict[tuple[RowKind, int], str]) -> None:
        """Record the destinations chosen for a round's rows: one UPDATE per table."""
        with self._writing() as session:
            chosen = [(kind, row_id, path) for (kind, row_id), path in intended.items()]
            for kind, paths in _by_kind(chosen).items():
                rows = [{"row_id": row_id, "path": path} for row_id, path in paths.items()]
                _update_rows(session, kind, rows, "direct", intended_path=bindparam("path"))

    def record_moved_many(self, moved: Sequence[tuple[RowKind, int, str]]) -> None:
        """Close the rows of files now in their final place, in one transaction.

        One UPDATE per table for the round's rows (executemany), not one loaded object each:
        the routing thread holds the GIL the model lanes need while SQLAlchemy works."""
        if not moved:
            return
        with self._writing() as session:
            session.connection()  # BEGIN IMMEDIATE: another writer is waited out first
            done_at = utcnow()  # when the moves are recorded, not when the round asked to
            for kind, closed in _by_kind(moved).items():
                _close_rows(session, kind, closed, done_at)

    def record_source_lost(self, kind: RowKind, row_id: int, reason: str) -> None:
        """The file left the inbox by other hands before it could be moved: say so, and close."""
        with self._writing() as session:
            row = _row(session, kind, row_id)
            row.done_at = utcnow()
            clear_stuck(session, kind, row_id)
            if isinstance(row, Image):
                row.state = ImageState.DONE
                row.decision = ImageDecision.VANISHED
                row.last_error = reason
            else:
                row.state = MoveState.DONE
                if isinstance(row, Reject):
                    row.reason = f"{row.reason}; {reason}"

    # --- reporting ------------------------------------------------------------------------------

    def oldest_queued_since(self) -> datetime | None:
        with self._reading() as session:
            return session.scalar(
                select(func.min(Image.first_seen_at)).where(Image.state == ImageState.QUEUED)
            )

    def classified_final_paths(self, limit: int) -> list[str]:
        """Where the newest `limit` classified images now lie, for compare-precision."""
        with self._reading() as session:
            query = (
                select(Image.final_path)
                .where(Image.final_path.is_not(None), Image.classifications.any())
                .order_by(Image.done_at.desc(), Image.id.desc())
                .limit(limit)
            )
            return [str(path) for path in session.scalars(query)]

    def last_done_at(self) -> datetime | None:
        with self._reading() as session:
            return session.scalar(select(func.max(Image.done_at)))

    def decisions_since(self, since: datetime) -> dict[str, int]:
        with self._reading() as session:
            images = session.execute(
                select(Image.decision, func.count())
                .where(Image.done_at >= since)
                .group_by(Image.decision)
            ).all()
            duplicates = session.scalar(
                select(func.count()).select_from(Duplicate).where(Duplicate.done_at >= since)
            )
            rejects = session.scalar(
                select(func.count()).select_from(Reject).where(Reject.done_at >= since)
            )
        totals = {str(decision): count for decision, count in images}
        totals["duplicate"] = duplicates or 0
        totals["rejected"] = rejects or 0
        return totals

    def pending_move_count(self) -> int:
        with self._reading() as session:
            duplicates = session.scalar(select(func.count()).where(is_open(Duplicate)))
            rejects = session.scalar(select(func.count()).where(is_open(Reject)))
        return (duplicates or 0) + (rejects or 0)


def _still_there(image: Image) -> bool:
    """Whether the image's recorded inbox path may still hold its content: something of its
    size is there. A cheap look (no read): another size there is certainly other content."""
    try:
        return os.lstat(image.original_path).st_size == image.size_bytes
    except OSError:
        return False


def _new_image(path: str, sha256: str, size: int, deployment: str | None) -> Image:
    return Image(
        deployment=deployment,
        sha256=sha256,
        original_path=path,
        original_name=path.rsplit("/", 1)[-1],
        size_bytes=size,
        state=ImageState.QUEUED,
        attempts=0,
    )


def _revive(session: Session, image: Image, path: str, size: int) -> None:
    """Point a vanished image at a new copy of its bytes: queued again, or, when it was
    classified before its file went, routed with that decision (never classified twice)."""
    decided = session.scalar(
        select(Classification.decision)
        .where(Classification.image_id == image.id)
        .order_by(Classification.id.desc())
        .limit(1)
    )
    image.original_path = path
    image.original_name = path.rsplit("/", 1)[-1]
    image.size_bytes = size
    image.state = ImageState.QUEUED if decided is None else ImageState.ROUTING
    image.decision = None if decided is None else ImageDecision(decided.value)
    image.attempts = 0
    image.last_error = image.intended_path = image.final_path = image.done_at = None


def _close_rows(session: Session, kind: RowKind, closed: dict[int, str], done_at: datetime) -> None:
    """Mark the rows done at their final paths; NoResultFound (rolling the round back) when one
    is missing, as loading it would."""
    state = ImageState.DONE if kind is RowKind.IMAGE else MoveState.DONE
    rows = [{"row_id": row_id, "path": path} for row_id, path in closed.items()]
    values = {"final_path": bindparam("path"), "done_at": done_at, "state": state}
    _update_rows(session, kind, rows, "close", **values)
    clear_stuck_many(session, kind, list(closed))


def _update_rows(
    session: Session, kind: RowKind, rows: list[dict[str, object]], doing: str, **values: object
) -> None:
    """One UPDATE of `kind`'s table run for every row (executemany; each names its `row_id`);
    NoResultFound (nothing recorded) when a row is missing, as loading it would."""
    table = _TABLES[kind]
    statement = update(table).where(table.id == bindparam("row_id")).values(**values)
    updated = session.connection().execute(statement, rows).rowcount
    if updated != len(rows):
        raise NoResultFound(f"{len(rows) - updated} {kind} row(s) to {doing} are missing")


def _by_kind(rows: Iterable[tuple[RowKind, int, str]]) -> dict[RowKind, dict[int, str]]:
    """(kind, row id, path) triples as paths by row id, by kind: one statement per table."""
    grouped: dict[RowKind, dict[int, str]] = {}
    for kind, row_id, path in rows:
        grouped.setdefault(kind, {})[row_id] = path
    return grouped


# The rows that name an inbox path while their file is still there, by table.
_INBOX_PATHS = (
    (Image, Image.original_path),
    (Duplicate, Duplicate.source_path),
    (Reject, Reject.source_path),
)
_PATHS_PER_STATEMENT = 900  # bound parameters: under SQLite's oldest limit (999)

_TABLES: dict[RowKind, type[Image] | type[Duplicate] | type[Reject]] = {
    RowKind.IMAGE: Image,
    RowKind.DUPLICATE: Duplicate,
    RowKind.REJECT: Reject,
}


def _row(session: Session, kind: RowKind, row_id: int) -> Image | Duplicate | Reject:
    match kind:
        case RowKind.IMAGE:
            return session.get_one(Image, row_id)
        case RowKind.DUPLICATE:
            return session.get_one(Duplicate, row_id)
        case RowKind.REJECT:
            return session.get_one(Reject, row_id)


def _images_by_id(ids: Sequence[int]) -> Select[Image]:
    return select(Image).where(Image.id.in_(ids))


def _apply_result(image: Image, result: ClassifiedImage) -> None:
    image.state = ImageState.ROUTING
    image.decision = ImageDecision(result.decision.value)
    image.capture_time = result.capture_time
    image.camera_make = result.camera_make
    image.camera_model = result.camera_model
    image.infrared = result.infrared
    image.strip_top = None if result.strips is None else result.strips[0]
    image.strip_bottom = None if result.strips is None else result.strips[1]
