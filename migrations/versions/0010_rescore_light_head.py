"""Rescored classifications name the row whose embedding they re-decided; heads take the light.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 11:30:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no constraint): SQLite needs no table rebuild, and the
    # image_latest view, which selects named columns, is untouched.
    op.add_column("classifications", sa.Column("rescored_from", sa.Integer(), nullable=True))
    op.add_column("heads", sa.Column("infrared_weight", sa.Float(), nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+): a batch rebuild would trip over the image_latest view.
    op.execute("ALTER TABLE heads DROP COLUMN infrared_weight")
    op.execute("ALTER TABLE classifications DROP COLUMN rescored_from")
