"""Deployments and events: images.deployment, corrected capture times, events and refiles.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 11:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic. Other branches add 0005; the chain is fixed at merge.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IMAGE_COLUMNS = (
    sa.Column("deployment", sa.Text(), nullable=True),
    sa.Column("capture_time_corrected", sa.DateTime(), nullable=True),
    sa.Column("capture_time_utc", sa.DateTime(), nullable=True),
    sa.Column("event_id", sa.Integer(), nullable=True),
    sa.Column("route_reason", sa.Text(), nullable=True),
)


def upgrade() -> None:
    # Plain ADD COLUMNs (no foreign key on event_id): SQLite cannot add a constraint to an
    # existing table without rebuilding it, and a rebuild would trip over the image_latest view.
    for column in _IMAGE_COLUMNS:
        op.add_column("images", column)
    op.create_index(op.f("ix_images_deployment"), "images", ["deployment"], unique=False)
    op.create_index(op.f("ix_images_event_id"), "images", ["event_id"], unique=False)
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.Text(), nullable=True),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("frame_count", sa.Integer(), nullable=False),
        sa.Column("max_target_score", sa.Float(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("refile_pending", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "decision IN ('positive', 'uncertain', 'negative')", name=op.f("ck_events_decision")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_deployment"), "events", ["deployment"], unique=False)
    op.create_table(
        "refiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("intended_path", sa.Text(), nullable=False),
        sa.Column("final_path", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("state IN ('routing', 'done')", name=op.f("ck_refiles_state")),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_refiles_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refiles")),
    )
    op.create_index(op.f("ix_refiles_image_id"), "refiles", ["image_id"], unique=False)
    op.create_index(op.f("ix_refiles_state"), "refiles", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_refiles_state"), table_name="refiles")
    op.drop_index(op.f("ix_refiles_image_id"), table_name="refiles")
    op.drop_table("refiles")
    op.drop_index(op.f("ix_events_deployment"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_images_event_id"), table_name="images")
    op.drop_index(op.f("ix_images_deployment"), table_name="images")
    # SQLite's own DROP COLUMN (3.35+): a batch rebuild would trip over the image_latest view.
    for column in reversed(_IMAGE_COLUMNS):
        op.execute(f"ALTER TABLE images DROP COLUMN {column.name}")
