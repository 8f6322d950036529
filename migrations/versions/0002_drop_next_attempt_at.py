"""Drop images.next_attempt_at: never written (the worker keeps retry times on the monotonic clock).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 16:05:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of daemon.storage.schema.IMAGE_LATEST_VIEW_SQL as of this revision (a test
# compares them).
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

# The view as revision 0001 left it, for downgrade().
_VIEW_SQL_0001 = """\
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
    # Batch mode rebuilds `images`; the view names it, so it goes first and comes back after.
    op.execute("DROP VIEW image_latest")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("next_attempt_at")
    op.execute(IMAGE_LATEST_VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW image_latest")
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
    op.execute(_VIEW_SQL_0001)
