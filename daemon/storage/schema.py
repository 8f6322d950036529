"""The database schema: typed SQLAlchemy ORM models of the queue and its results."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import JSON

from daemon.outcomes import Decision
from daemon.storage.column_types import FsPath, Message, StrEnumType, UTCDateTime
from daemon.storage.column_types import printable as printable  # re-exported: error text

# Timestamps: timezone-aware UTC datetimes in Python, stored as naive UTC in SQLAlchemy's
# DateTime format ("2025-01-31 23:59:59.123456"), which sorts as text and reads plainly in the
# sqlite3 shell. The one exception is images.capture_time: the camera's own local clock from
# EXIF, naive, with no known zone, stored and returned as it is.

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IMAGE_LATEST_VIEW = "image_latest"

# One row per image with its newest classification (NULLs while unclassified). Migrations
# freeze a copy of this text; a test checks that the copy in force equals this constant.
IMAGE_LATEST_VIEW_SQL = """\
CREATE VIEW image_latest AS
SELECT
    i.id,
    i.sha256,
    i.original_path,
    i.original_name,
    i.size_bytes,
    i.first_seen_at,
    i.state,
    i.decision,
    i.attempts,
    i.last_error,
    i.intended_path,
    i.final_path,
    i.done_at,
    i.capture_time,
    i.camera_make,
    i.camera_model,
    i.infrared,
    i.strip_top,
    i.strip_bottom,
    i.deployment,
    i.capture_time_corrected,
    i.capture_time_utc,
    i.event_id,
    i.route_reason,
    c.model_name,
    c.target_score,
    c.decision AS classification_decision,
    c.probabilities,
    c.created_at AS classified_at
FROM images AS i
LEFT JOIN classifications AS c
    ON c.id = (
        SELECT c2.id
        FROM classifications AS c2
        WHERE c2.image_id = i.id
        ORDER BY c2.created_at DESC, c2.id DESC
        LIMIT 1
    )"""


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime, the form every timestamp takes."""
    return datetime.now(UTC)


class ImageState(enum.StrEnum):
    """Where an image is in the queue."""

    QUEUED = "queued"
    ROUTING = "routing"  # decided, destination recorded, file move not yet confirmed
    DONE = "done"


class ImageDecision(enum.StrEnum):
    """What finally happened to an image's file."""

    POSITIVE = "positive"
    UNCERTAIN = "uncertain"
    NEGATIVE = "negative"
    QUARANTINED = "quarantined"
    VANISHED = "vanished"  # the file disappeared from the inbox before it could be moved


class RowKind(enum.StrEnum):
    """Which table a queue row lives in: every kind of row has a file to move out of an inbox."""

    IMAGE = "image"
    DUPLICATE = "duplicate"
    REJECT = "reject"


class MoveState(enum.StrEnum):
    """Progress of moving a duplicate or rejected inbox entry out of the inbox."""

    ROUTING = "routing"
    DONE = "done"


def _one_of(column: str, enum_class: type[enum.StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Image(Base):
    """One distinct content (by SHA-256), the unit of work of the queue."""

    __tablename__ = "images"
    __table_args__ = (
        _one_of("state", ImageState),
        _one_of("decision", ImageDecision),
        # What `tigerwatch status` and the README's queries look up at a million rows
        # (README "Throughput", growth): recent outcomes, one outcome by time, per camera,
        # and the latest error among the few rows that have one.
        Index("ix_images_done_at_decision", "done_at", "decision"),
        # Partial, so only a query that names a decision can use it: an index led by decision
        # would otherwise win "GROUP BY decision" for its order and be read whole (1M rows)
        # instead of today's range of ix_images_done_at_decision.
        Index(
            "ix_images_decision_done_at",
            "decision",
            "done_at",
            sqlite_where=text("decision IS NOT NULL"),
        ),
        Index(
            "ix_images_camera_make_camera_model_decision", "camera_make", "camera_model", "decision"
        ),
        Index(
            "ix_images_error_done_at",
            "done_at",
            "first_seen_at",
            sqlite_where=text("last_error IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    original_path: Mapped[str] = mapped_column(FsPath, index=True)  # where it was first seen
    original_name: Mapped[str | None] = mapped_column(FsPath)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[ImageState] = mapped_column(
        StrEnumType(ImageState), index=True, default=ImageState.QUEUED
    )
    decision: Mapped[ImageDecision | None] = mapped_column(StrEnumType(ImageDecision))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Message)
    intended_path: Mapped[str | None] = mapped_column(FsPath)  # recorded before the move
    final_path: Mapped[str | None] = mapped_column(FsPath)  # recorded after the move
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    capture_time: Mapped[datetime | None] = mapped_column(DateTime)  # camera-local, naive
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    # Judged from the pixels when classified (NULL until then): grey content, a night IR frame.
    infrared: Mapped[bool | None] = mapped_column(Boolean)
    # Info strip rows cut before the model saw the frame, in the original's pixels (0: none).
    strip_top: Mapped[int | None] = mapped_column(Integer)
    strip_bottom: Mapped[int | None] = mapped_column(Integer)
    # The deployment (camera at a place) named by the path it arrived by; None: no deployment.
    deployment: Mapped[str | None] = mapped_column(FsPath, index=True)
    # capture_time with the deployment's clock offset added (still camera-local, naive), and
    # in UTC when the deployment's timezone is configured.
    capture_time_corrected: Mapped[datetime | None] = mapped_column(DateTime)
    capture_time_utc: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_id: Mapped[int | None] = mapped_column(Integer, index=True)  # events.id
    # Why the file went elsewhere than its own decision says (its event's decision).
    route_reason: Mapped[str | None] = mapped_column(Message)

    classifications: Mapped[list[Classification]] = relationship(
        back_populates="image",
        order_by="Classification.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    duplicates: Mapped[list[Duplicate]] = relationship(
        back_populates="image",
        order_by="Duplicate.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Classification(Base):
    """One CLIP classification run of an image, with everything needed to audit it."""

    __tablename__ = "classifications"
    __table_args__ = (_one_of("decision", Decision),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(Text)
    precision: Mapped[str] = mapped_column(String(16))  # e.g. "fp32", "bf16", "int8"
    labels: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"text": ..., "target": bool}]
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)  # label text -> probability
    target_score: Mapped[float] = mapped_column(Float)
    decision: Mapped[Decision] = mapped_column(StrEnumType(Decision))
    positive_threshold: Mapped[float] = mapped_column(Float)
    uncertain_threshold: Mapped[float] = mapped_column(Float)
    decode_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    # Little-endian float16 (float32 in rows written before 0007): daemon.embeddings reads both.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    head_id: Mapped[int | None] = mapped_column(
        Integer
    )  # heads.id whose score decided; None: zero-shot
    # The classification whose stored embedding `tigerwatch rescore --apply` decided again;
    # None: the image was decoded and embedded for this row.
    rescored_from: Mapped[int | None] = mapped_column(Integer)

    image: Mapped[Image] = relationship(back_populates="classifications")


class Duplicate(Base):
    """A later arrival of content already in images: never classified again, only moved."""

    __tablename__ = "duplicates"
    __table_args__ = (_one_of("state", MoveState), Index("ix_duplicates_done_at", "done_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    source_path: Mapped[str] = mapped_column(FsPath, index=True)
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[MoveState] = mapped_column(
        StrEnumType(MoveState), index=True, default=MoveState.ROUTING
    )
    intended_path: Mapped[str | None] = mapped_column(FsPath)
    final_path: Mapped[str | None] = mapped_column(FsPath)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    image: Mapped[Image] = relationship(back_populates="duplicates")


class Reject(Base):
    """An inbox entry that is never opened (a symlink, a FIFO, ...), moved aside with a reason."""

    __tablename__ = "rejects"
    __table_args__ = (
        _one_of("state", MoveState),
        Index("ix_rejects_done_at", "done_at"),
        Index("ix_rejects_arrived_at", "arrived_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_path: Mapped[str] = mapped_column(FsPath, index=True)
    reason: Mapped[str] = mapped_column(Message)
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[MoveState] = mapped_column(
        StrEnumType(MoveState), index=True, default=MoveState.ROUTING
    )
    intended_path: Mapped[str | None] = mapped_column(FsPath)
    final_path: Mapped[str | None] = mapped_column(FsPath)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StuckMove(Base):
    """An inbox entry the daemon cannot move at all (its folder refuses, not a file): left in
    place with the reason, until a later try (hourly, or at start-up) succeeds."""

    __tablename__ = "stuck_moves"
    __table_args__ = (_one_of("kind", RowKind), UniqueConstraint("kind", "row_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[RowKind] = mapped_column(StrEnumType(RowKind))
    row_id: Mapped[int] = mapped_column(Integer)  # images.id, duplicates.id or rejects.id
    source_path: Mapped[str] = mapped_column(FsPath)
    reason: Mapped[str] = mapped_column(Message)
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VerdictValue(enum.StrEnum):
    """What staff decided a frame shows."""

    TIGER = "tiger"
    NOT_TIGER = "not-tiger"


class VerdictSource(enum.StrEnum):
    """How a verdict reached the database."""

    FOLDER = "folder"  # a frame moved into a verdict folder
    CLI = "cli"  # `tigerwatch verdict --tiger|--not-tiger`
    IMPORT = "import"  # `tigerwatch verdict --import FILE.csv`
    AUDIT = "audit"  # a frame of the audit sample judged through the verdict folders


class Verdict(Base):
    """One staff verdict on an image; every change is a new row, the newest one counts."""

    __tablename__ = "verdicts"
    __table_args__ = (_one_of("verdict", VerdictValue), _one_of("source", VerdictSource))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[VerdictValue] = mapped_column(StrEnumType(VerdictValue))
    source: Mapped[VerdictSource] = mapped_column(StrEnumType(VerdictSource))
    who: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditSample(Base):
    """A frame drawn into an audit batch, with the weight it stands for in its stratum."""

    __tablename__ = "audit_samples"
    __table_args__ = (UniqueConstraint("batch", "image_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    batch: Mapped[str] = mapped_column(String(32))  # the audit folder's date, e.g. "2026-12-02"
    stratum: Mapped[str] = mapped_column(String(16))  # the decision drawn from: negative|uncertain
    weight: Mapped[float] = mapped_column(Float)  # population / sample size: frames it stands for
    population: Mapped[int] = mapped_column(Integer)  # frames in the stratum when drawn
    link_path: Mapped[str] = mapped_column(FsPath)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Head(Base):
    """A linear head trained by `tigerwatch adapt` on stored image embeddings and verdicts."""

    __tablename__ = "heads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(Text)
    model_revision: Mapped[str | None] = mapped_column(Text)  # the embeddings' model revision
    verdict_count: Mapped[int] = mapped_column(Integer)
    cv: Mapped[dict[str, Any]] = mapped_column(JSON)  # cross-validated figures, head and zero-shot
    weights: Mapped[list[float]] = mapped_column(JSON)  # one per embedding dimension
    bias: Mapped[float] = mapped_column(Float)
    # Added to the logit of infrared frames (the light is one more input); None: a head from
    # before revision 0010, which sees the embedding alone.
    infrared_weight: Mapped[float | None] = mapped_column(Float)


class Event(Base):
    """Frames of one deployment whose corrected capture times lie within the gap of each other."""

    __tablename__ = "events"
    __table_args__ = (
        _one_of("decision", Decision),
        # The week's tiger events (README): without it, a walk of the deployment index.
        Index("ix_events_decision_start_time", "decision", "start_time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment: Mapped[str | None] = mapped_column(FsPath, index=True)
    start_time: Mapped[datetime | None] = mapped_column(DateTime)  # corrected, camera-local
    end_time: Mapped[datetime | None] = mapped_column(DateTime)
    frame_count: Mapped[int] = mapped_column(Integer)
    max_target_score: Mapped[float] = mapped_column(Float)
    decision: Mapped[Decision] = mapped_column(StrEnumType(Decision))  # its best frame's
    # Changes not yet filed (frames may have to move); cleared only if unchanged meanwhile.
    refile_pending: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Refile(Base):
    """A move of an already-filed frame to another folder (event promotion, a rescore)."""

    __tablename__ = "refiles"
    __table_args__ = (_one_of("state", MoveState),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Message)
    decision: Mapped[Decision] = mapped_column(StrEnumType(Decision))  # of the new destination
    source_path: Mapped[str] = mapped_column(FsPath)
    intended_path: Mapped[str] = mapped_column(FsPath)
    final_path: Mapped[str | None] = mapped_column(FsPath)  # None when done: not moved (note)
    note: Mapped[str | None] = mapped_column(Message)  # why it was not moved
    state: Mapped[MoveState] = mapped_column(
        StrEnumType(MoveState), index=True, default=MoveState.ROUTING
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
