"""What `tigerwatch rescore` reads (filed frames, their events) and records (new decisions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from daemon.outcomes import Decision
from daemon.storage.schema import (
    Classification,
    Event,
    Image,
    ImageDecision,
    ImageState,
    Verdict,
    utcnow,
)
from daemon.storage.transactions import Transactions

_FILED = (ImageDecision.POSITIVE, ImageDecision.UNCERTAIN, ImageDecision.NEGATIVE)


@dataclass(frozen=True)
class RescoreFrame:
    """A classified frame with a destination, its latest classification and where it lies."""

    image_id: int
    sha256: str
    classification_id: int  # its latest classification
    filed: Decision  # images.decision: the destination its file went to (its event's)
    own: Decision  # the latest classification's decision: its own score's
    score: float  # the latest classification's target score
    embedding: bytes | None  # as stored (daemon.embeddings.from_stored); None: from before them
    embedding_dim: int | None
    model_name: str
    infrared: bool  # images.infrared; NULL counts as colour
    judged: bool  # carries a staff verdict
    done: bool  # filed (images.state done); else still on its way out of the inbox
    final_path: str | None
    event_id: int | None
    deployment: str | None
    capture_time: datetime | None  # corrected where known
    arrived_at: datetime


@dataclass(frozen=True)
class RescoreEvent:
    id: int
    deployment: str | None
    start_time: datetime | None
    frame_count: int
    decision: Decision


@dataclass(frozen=True)
class Redecided:
    """A new decision from a stored embedding: one new classifications row."""

    image_id: int
    rescored_from: int  # the classification whose embedding (and model fields) it reuses
    target_score: float
    decision: Decision
    probabilities: dict[str, float]  # zero-shot, under the current prompts
    labels: list[dict[str, object]]  # the current labels, as the worker records them
    thresholds: tuple[float, float]  # (positive, uncertain) of the frame's light
    head_id: int | None


@dataclass(frozen=True)
class EventChange:
    id: int
    decision: Decision
    max_target_score: float


class Rescores(Transactions):
    """`tigerwatch rescore`'s reads and its one write (a store of its own, on one engine)."""

    def frames(self) -> list[RescoreFrame]:
        """Every frame sent to review, uncertain or archive, with its latest classification."""
        latest = select(func.max(Classification.id)).group_by(Classification.image_id)
        judged = select(Verdict.image_id).distinct()
        with self._reading() as session:
            rows = session.execute(
                select(Image, Classification, Image.id.in_(judged))
                .join(Classification, Classification.image_id == Image.id)
                .where(Classification.id.in_(latest.scalar_subquery()), Image.decision.in_(_FILED))
                .order_by(Image.id)
            ).all()
            return [_frame(image, row, bool(is_judged)) for image, row, is_judged in rows]

    def events(self, ids: Sequence[int]) -> dict[int, RescoreEvent]:
        with self._reading() as session:
            rows = session.scalars(select(Event).where(Event.id.in_(ids)))
            return {
                e.id: RescoreEvent(e.id, e.deployment, e.start_time, e.frame_count, e.decision)
                for e in rows
            }

    def record(self, redecided: Sequence[Redecided], events: Sequence[EventChange]) -> None:
        """The new decisions and the events' new decisions, in one transaction, before any
        frame is moved (a second run moves what a crash left where it was)."""
        with self._writing() as session:
            for new in redecided:
                session.add(
                    _classification(session.get_one(Classification, new.rescored_from), new)
                )
            for change in events:
                event = session.get_one(Event, change.id)
                event.decision, event.max_target_score = change.decision, change.max_target_score
                event.updated_at = utcnow()
                # The daemon's filing pass looks at the event again when it starts: a frame
                # still on its way out of the inbox, or one a destination refused, ends up
                # with its event even if this run does not move it.
                event.refile_pending += 1


def _frame(image: Image, row: Classification, judged: bool) -> RescoreFrame:
    assert image.decision is not None  # selected by decision
    return RescoreFrame(
        image_id=image.id,
        sha256=image.sha256,
        classification_id=row.id,
        filed=Decision(image.decision.value),
        own=Decision(row.decision),
        score=row.target_score,
        embedding=row.embedding,
        embedding_dim=row.embedding_dim,
        model_name=row.model_name,
        infrared=bool(image.infrared),
        judged=judged,
        done=image.state == ImageState.DONE,
        final_path=None if image.final_path is None else str(image.final_path),
        event_id=image.event_id,
        deployment=image.deployment,
        capture_time=image.capture_time_corrected or image.capture_time,
        arrived_at=image.first_seen_at,
    )


def _classification(source: Classification, new: Redecided) -> Classification:
    return Classification(
        image_id=new.image_id,
        model_name=source.model_name,
        model_revision=source.model_revision,
        precision=source.precision,
        labels=new.labels,
        probabilities=new.probabilities,
        target_score=new.target_score,
        decision=new.decision,
        positive_threshold=new.thresholds[0],
        uncertain_threshold=new.thresholds[1],
        embedding=source.embedding,
        embedding_dim=source.embedding_dim,
        head_id=new.head_id,
        rescored_from=source.id,
    )
