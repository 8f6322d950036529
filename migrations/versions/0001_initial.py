"""Initial schema: the image queue, classification runs, duplicates, rejects, image_latest.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:09:31.393040

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of daemon.storage.schema.IMAGE_LATEST_VIEW_SQL as of this revision (a test compares them).
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
    i.next_attempt_at,
    i.last_error,
    i.intended_path,
    i.final_path,
    i.done_at,
    i.capture_time,
    i.camera_make,
    i.camera_model,
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


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("original_path", sa.Text(), nullable=False),
        sa.Column("original_name", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("intended_path", sa.Text(), nullable=True),
        sa.Column("final_path", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("capture_time", sa.DateTime(), nullable=True),
        sa.Column("camera_make", sa.String(length=128), nullable=True),
        sa.Column("camera_model", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "decision IN ('positive', 'uncertain', 'negative', 'quarantined', 'vanished')",
            name=op.f("ck_images_decision"),
        ),
        sa.CheckConstraint("state IN ('queued', 'routing', 'done')", name=op.f("ck_images_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("sha256", name=op.f("uq_images_sha256")),
    )
    op.create_index(op.f("ix_images_state"), "images", ["state"])
    op.create_index(op.f("ix_images_original_path"), "images", ["original_path"])

    op.create_table(
        "classifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_revision", sa.Text(), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("target_score", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("positive_threshold", sa.Float(), nullable=False),
        sa.Column("uncertain_threshold", sa.Float(), nullable=False),
        sa.Column("decode_ms", sa.Float(), nullable=True),
        sa.Column("inference_ms", sa.Float(), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "decision IN ('positive', 'uncertain', 'negative')",
            name=op.f("ck_classifications_decision"),
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_classifications_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_classifications")),
    )
    op.create_index(op.f("ix_classifications_image_id"), "classifications", ["image_id"])

    op.create_table(
        "duplicates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("arrived_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("intended_path", sa.Text(), nullable=True),
        sa.Column("final_path", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("state IN ('routing', 'done')", name=op.f("ck_duplicates_state")),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_duplicates_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duplicates")),
    )
    op.create_index(op.f("ix_duplicates_image_id"), "duplicates", ["image_id"])
    op.create_index(op.f("ix_duplicates_state"), "duplicates", ["state"])
    op.create_index(op.f("ix_duplicates_source_path"), "duplicates", ["source_path"])

    op.create_table(
        "rejects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("arrived_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("intended_path", sa.Text(), nullable=True),
        sa.Column("final_path", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("state IN ('routing', 'done')", name=op.f("ck_rejects_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejects")),
    )
    op.create_index(op.f("ix_rejects_state"), "rejects", ["state"])
    op.create_index(op.f("ix_rejects_source_path"), "rejects", ["source_path"])

    op.execute(IMAGE_LATEST_VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS image_latest")
    op.drop_table("rejects")
    op.drop_table("duplicates")
    op.drop_table("classifications")
    op.drop_table("images")
