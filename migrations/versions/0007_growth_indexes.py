"""Indexes for a million images: status and the README's queries without full scans.

Embeddings written from now on are float16 (half the bytes); rows already stored stay float32
and are read by their length (daemon.embeddings), so no data changes here.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 11:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic. Other branches add revisions after 0004 too; the
# chain is fixed at merge.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name, table, columns, partial-index condition
INDEXES: tuple[tuple[str, str, list[str], str | None], ...] = (
    ("ix_images_done_at_decision", "images", ["done_at", "decision"], None),
    # Partial: "GROUP BY decision" must not pick it for its order and read it whole.
    ("ix_images_decision_done_at", "images", ["decision", "done_at"], "decision IS NOT NULL"),
    (
        "ix_images_camera_make_camera_model_decision",
        "images",
        ["camera_make", "camera_model", "decision"],
        None,
    ),
    ("ix_images_error_done_at", "images", ["done_at", "first_seen_at"], "last_error IS NOT NULL"),
    ("ix_duplicates_done_at", "duplicates", ["done_at"], None),
    ("ix_rejects_done_at", "rejects", ["done_at"], None),
    ("ix_rejects_arrived_at", "rejects", ["arrived_at"], None),
)


def upgrade() -> None:
    for name, table, columns, where in INDEXES:
        condition = None if where is None else sa.text(where)
        op.create_index(name, table, columns, unique=False, sqlite_where=condition)


def downgrade() -> None:
    for name, table, _columns, _where in reversed(INDEXES):
        op.drop_index(name, table_name=table)
