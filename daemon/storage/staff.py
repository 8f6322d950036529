"""Staff records: verdicts on frames, the scores they judge, and the audit samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from daemon.storage.schema import (
    AuditSample,
    Classification,
    Head,
    Image,
    ImageDecision,
    Verdict,
    VerdictSource,
    VerdictValue,
    utcnow,
)
from daemon.storage.transactions import StoreUnavailable, Transactions

# Columns other branches add to images (infrared flags, events, deployments): figures are split
# by each one present in the database, and simply not split while it is absent.
OPTIONAL_SPLITS = ("infrared", "event_id", "deployment")


@dataclass(frozen=True)
class NewVerdict:
    image_id: int
    verdict: VerdictValue
    source: VerdictSource
    who: str | None


@dataclass(frozen=True)
class FrameRecord:
    """What the verdict folders need to know of a frame: where it is, and how staff judged it."""

    image_id: int
    sha256: str
    final_path: str | None
    folder_verdict: VerdictValue | None  # the newest verdict given through the folders
    audited: bool  # drawn into an audit sample at least once


@dataclass(frozen=True)
class ScoredFrame:
    """An image's latest tiger score, its latest staff verdict (None: not judged) and splits."""

    image_id: int
    score: float
    is_tiger: bool | None
    first_seen_at: datetime
    decision: str | None
    splits: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgedEmbedding:
    image_id: int
    embedding: bytes  # as stored: read it with daemon.embeddings.from_stored
    embedding_dim: int | None
    zero_shot_score: float
    is_tiger: bool
    model_name: str
    model_revision: str | None
    infrared: bool  # the frame's light (images.infrared; NULL counts as colour)


@dataclass(frozen=True)
class StoredHead:
    id: int
    model_name: str
    verdict_count: int
    cv: dict[str, object]
    weights: list[float]
    bias: float
    infrared_weight: float | None  # None: trained on the embedding alone


@dataclass(frozen=True)
class AuditFrame:
    image_id: int
    batch: str
    stratum: str
    weight: float
    population: int
    is_tiger: bool | None


class StaffStore(Transactions):
    """The staff loop's reads and writes: verdicts, audit samples, heads, stored scores."""

    # --- finding frames -------------------------------------------------------------------------

    def image_at(self, path: str) -> int | None:
        """The image whose file is recorded at `path` (its final path), if any."""
        with self._reading() as session:
            found = session.scalars(
                select(Image.id).where(Image.final_path == path).order_by(Image.id.desc())
            ).first()
            return found

    def image_with_sha256(self, sha256: str) -> int | None:
        with self._reading() as session:
            return session.scalars(select(Image.id).where(Image.sha256 == sha256.lower())).first()

    def audit_image_at(self, path: str) -> int | None:
        """The image an audit link at `path` stands for, if any."""
        with self._reading() as session:
            return session.scalars(
                select(AuditSample.image_id)
                .where(AuditSample.link_path == path)
                .order_by(AuditSample.id.desc())
            ).first()

    def frame_record(self, image_id: int) -> FrameRecord:
        folder_sources = (VerdictSource.FOLDER, VerdictSource.AUDIT)
        with self._reading() as session:
            image = session.get_one(Image, image_id)
            verdict = session.scalars(
                select(Verdict.verdict)
                .where(Verdict.image_id == image_id, Verdict.source.in_(folder_sources))
                .order_by(Verdict.id.desc())
            ).first()
            audited = session.scalars(
                select(AuditSample.id).where(AuditSample.image_id == image_id)
            ).first()
            final = None if image.final_path is None else str(image.final_path)
            return FrameRecord(image_id, image.sha256, final, verdict, audited is not None)

    def record_sorted(
        self, image_id: int, verdict: NewVerdict | None, moved_to: str | None
    ) -> None:
        """One transaction: where staff moved the frame (the invariant follows the file) and
        the verdict that move gave, each when there is one."""
        with self._writing() as session:
            if moved_to is not None:
                session.get_one(Image, image_id).final_path = moved_to
            if verdict is not None:
                session.add(_verdict_row(verdict, utcnow()))

    # --- verdicts -----------------------------------------------------------------------------

    def record_verdicts(self, verdicts: Sequence[NewVerdict]) -> None:
        with self._writing() as session:
            now = utcnow()
            session.add_all(_verdict_row(v, now) for v in verdicts)

    def latest_verdicts(self) -> dict[int, VerdictValue]:
        """image id -> its newest verdict (history stays in the table)."""
        with self._reading() as session:
            newest = select(func.max(Verdict.id)).group_by(Verdict.image_id).scalar_subquery()
            rows = session.execute(
                select(Verdict.image_id, Verdict.verdict).where(Verdict.id.in_(newest))
            )
            return {image_id: verdict for image_id, verdict in rows}

    # --- scores -------------------------------------------------------------------------------

    def scored_frames(self) -> list[ScoredFrame]:
        """Every classified image with its latest score and verdict, oldest first."""
        verdicts = self.latest_verdicts()
        splits = self._optional_splits()
        with self._reading() as session:
            latest = (
                select(func.max(Classification.id)).group_by(Classification.image_id)
            ).scalar_subquery()
            rows = session.execute(
                select(Image.id, Classification.target_score, Image.first_seen_at, Image.decision)
                .join(Classification, Classification.image_id == Image.id)
                .where(Classification.id.in_(latest))
                .order_by(Image.id)
            ).all()
        return [
            ScoredFrame(
                image_id=image_id,
                score=score,
                is_tiger=_is_tiger(verdicts.get(image_id)),
                first_seen_at=seen,
                decision=decision.value if decision else None,
                splits=splits.get(image_id, {}),
            )
            for image_id, score, seen, decision in rows
        ]

    def split_columns(self) -> list[str]:
        """The optional split columns this database has (see OPTIONAL_SPLITS)."""
        try:
            present = {column["name"] for column in inspect(self._engine).get_columns("images")}
        except OperationalError as err:
            raise StoreUnavailable(str(err.orig or err)) from err
        return [name for name in OPTIONAL_SPLITS if name in present]

    def _optional_splits(self) -> dict[int, dict[str, object]]:
        columns = self.split_columns()
        if not columns:
            return {}
        # Names come from OPTIONAL_SPLITS only, never from input.
        sql = text(f"SELECT id, {', '.join(columns)} FROM images")
        with self._reading() as session:
            return {
                row[0]: dict(zip(columns, row[1:], strict=True)) for row in session.execute(sql)
            }

    # --- heads --------------------------------------------------------------------------------

    def judged_embeddings(self) -> list[JudgedEmbedding]:
        """Judged frames with the embedding and zero-shot score of their latest classification."""
        verdicts = self.latest_verdicts()
        with self._reading() as session:
            latest = (
                select(func.max(Classification.id))
                .where(Classification.embedding.is_not(None))
                .group_by(Classification.image_id)
            ).scalar_subquery()
            rows = session.execute(
                select(Classification, Image.infrared)
                .join(Image, Image.id == Classification.image_id)
                .where(Classification.id.in_(latest), Classification.image_id.in_(verdicts))
                .order_by(Classification.image_id)
            ).all()
            return [
                JudgedEmbedding(
                    image_id=row.image_id,
                    embedding=row.embedding or b"",
                    embedding_dim=row.embedding_dim,
                    zero_shot_score=_zero_shot(row),
                    is_tiger=verdicts[row.image_id] is VerdictValue.TIGER,
                    model_name=row.model_name,
                    model_revision=row.model_revision,
                    infrared=bool(infrared),
                )
                for row, infrared in rows
            ]

    def save_head(self, head: Head) -> int:
        with self._writing() as session:
            session.add(head)
            session.flush()
            return head.id

    def head(self, which: str) -> StoredHead | None:
        """Head `which`: "latest" or an id; None when there is no such head."""
        with self._reading() as session:
            if which == "latest":
                found = session.scalars(select(Head).order_by(Head.id.desc())).first()
            else:
                found = session.get(Head, int(which))
            return None if found is None else _head_row(found)

    # --- audit --------------------------------------------------------------------------------

    def audit_population(self, decision: ImageDecision) -> list[tuple[int, str]]:
        """(image id, file path) of every delivered frame with this decision, by id."""
        with self._reading() as session:
            rows = session.execute(
                select(Image.id, Image.final_path)
                .where(Image.decision == decision, Image.final_path.is_not(None))
                .order_by(Image.id)
            )
            return [(image_id, str(path)) for image_id, path in rows]

    def record_audit(self, samples: Sequence[AuditSample]) -> None:
        with self._writing() as session:
            session.add_all(samples)

    def audited_frames(self) -> list[AuditFrame]:
        """Every audit sample with the frame's latest verdict, in the order drawn."""
        verdicts = self.latest_verdicts()
        with self._reading() as session:
            rows = session.scalars(select(AuditSample).order_by(AuditSample.id)).all()
            return [
                AuditFrame(
                    image_id=row.image_id,
                    batch=row.batch,
                    stratum=row.stratum,
                    weight=row.weight,
                    population=row.population,
                    is_tiger=_is_tiger(verdicts.get(row.image_id)),
                )
                for row in rows
            ]

    def audit_link(self, image_id: int) -> str | None:
        with self._reading() as session:
            return session.scalars(
                select(AuditSample.link_path)
                .where(AuditSample.image_id == image_id)
                .order_by(AuditSample.id.desc())
            ).first()


def _verdict_row(verdict: NewVerdict, now: datetime) -> Verdict:
    v = verdict
    return Verdict(
        image_id=v.image_id, verdict=v.verdict, source=v.source, who=v.who, created_at=now
    )


def _head_row(head: Head) -> StoredHead:
    return StoredHead(
        head.id,
        head.model_name,
        head.verdict_count,
        head.cv,
        head.weights,
        head.bias,
        head.infrared_weight,
    )


def _zero_shot(row: Classification) -> float:
    """The text-prompt score, also when a head decided: the summed target-label probabilities."""
    if row.head_id is None:
        return row.target_score
    targets = {label["text"] for label in row.labels if label.get("target")}
    return sum(p for text, p in row.probabilities.items() if text in targets)


def _is_tiger(verdict: VerdictValue | None) -> bool | None:
    return None if verdict is None else verdict is VerdictValue.TIGER
