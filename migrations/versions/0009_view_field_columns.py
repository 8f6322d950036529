"""The image_latest view carries the frame's light, strips, deployment, corrected times, event
and route reason (the columns of revisions 0005 and 0006).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 11:10:00.000000

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
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
    i.infrared,
    i.strip_top,
    i.strip_bottom,
    i.deployment,
    i.capture_time_corrected,
    i.capture_time_utc,
    i.event_id,
    i.route_reason,
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

# The view as revisions 0002 to 0007 left it, for downgrade().
_VIEW_SQL_0002 = """\
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


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS image_latest")
    op.execute(IMAGE_LATEST_VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS image_latest")
    op.execute(_VIEW_SQL_0002)
