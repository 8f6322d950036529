"""Night infrared and info strips: images.infrared, images.strip_top, images.strip_bottom.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 11:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("infrared", "strip_top", "strip_bottom")


def upgrade() -> None:
    # NULL for the images classified before: their pixels were never judged.
    op.add_column("images", sa.Column("infrared", sa.Boolean(), nullable=True))
    op.add_column("images", sa.Column("strip_top", sa.Integer(), nullable=True))
    op.add_column("images", sa.Column("strip_bottom", sa.Integer(), nullable=True))


def downgrade() -> None:
    # SQLite's own DROP COLUMN (3.35+): a batch rebuild would trip over the image_latest view.
    for column in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE images DROP COLUMN {column}")
