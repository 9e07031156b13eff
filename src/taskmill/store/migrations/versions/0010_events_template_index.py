"""idx_events_template_id: a template's own events, for the pruner (partial index).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_OWN_EVENT = sa.text("job_id IS NULL AND template_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "idx_events_template_id",
        "events",
        ["template_id"],
        postgresql_where=_OWN_EVENT,
        sqlite_where=_OWN_EVENT,
        # An operator may build it beforehand with CREATE INDEX CONCURRENTLY (this
        # migration's transaction holds writes to events back while it reads the table;
        # docs/howto/retention.md).
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_index("idx_events_template_id", table_name="events")
