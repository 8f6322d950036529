"""Stuck moves: inbox entries that cannot be moved at all, left in place with the reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stuck_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('image', 'duplicate', 'reject')", name=op.f("ck_stuck_moves_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stuck_moves")),
        sa.UniqueConstraint("kind", "row_id", name=op.f("uq_stuck_moves_kind_row_id")),
    )


def downgrade() -> None:
    op.drop_table("stuck_moves")
