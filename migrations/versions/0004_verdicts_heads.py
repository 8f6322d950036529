"""Staff verdicts (history kept, the latest counts), the audit sample and trained heads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 20:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("who", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("verdict IN ('tiger', 'not-tiger')", name=op.f("ck_verdicts_verdict")),
        sa.CheckConstraint(
            "source IN ('folder', 'cli', 'import', 'audit')", name=op.f("ck_verdicts_source")
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_verdicts_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdicts")),
    )
    op.create_index(op.f("ix_verdicts_image_id"), "verdicts", ["image_id"], unique=False)
    op.create_table(
        "audit_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("batch", sa.String(length=32), nullable=False),
        sa.Column("stratum", sa.String(length=16), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("population", sa.Integer(), nullable=False),
        sa.Column("link_path", sa.Text(), nullable=False),
        sa.Column("sampled_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_audit_samples_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_samples")),
        sa.UniqueConstraint("batch", "image_id", name=op.f("uq_audit_samples_batch_image_id")),
    )
    op.create_index(op.f("ix_audit_samples_image_id"), "audit_samples", ["image_id"], unique=False)

    op.create_table(
        "heads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("model_name", sa.Text(), nullable=False),
        sa.Column("model_revision", sa.Text(), nullable=True),
        sa.Column("verdict_count", sa.Integer(), nullable=False),
        sa.Column("cv", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("bias", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heads")),
    )
    # No foreign key: SQLite cannot add one to an existing table without rebuilding it.
    op.add_column("classifications", sa.Column("head_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+): a batch rebuild would trip over the image_latest view.
    op.execute("ALTER TABLE classifications DROP COLUMN head_id")
    op.drop_table("heads")
    op.drop_index(op.f("ix_audit_samples_image_id"), table_name="audit_samples")
    op.drop_table("audit_samples")
    op.drop_index(op.f("ix_verdicts_image_id"), table_name="verdicts")
    op.drop_table("verdicts")
