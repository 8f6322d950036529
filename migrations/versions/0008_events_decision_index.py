"""An index for the week's events of one decision: the README's events queries at scale.

Without it, "this week's tiger events per deployment" walked the deployment index and read
every event's row (0.57-0.74 s at 1,000,000 images, 407,759 events); with it, the week's
positive events are a range of the index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 11:30:00.000000

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic. Other branches add revisions after 0007 too; the
# chain is fixed at merge.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_events_decision_start_time", "events", ["decision", "start_time"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_events_decision_start_time", table_name="events")
