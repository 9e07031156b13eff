"""templates.on_job_failure: ``keep`` (default) or ``disable``, which switches the
template off when one of its jobs fails for good; event_cursors: how far each event
handler (``@app.on_event``) has read the event log, and which process holds it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.add_column(
            sa.Column("on_job_failure", sa.String(20), nullable=False, server_default="keep")
        )
    op.create_table(
        "event_cursors",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("leased_by", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_cursors")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("on_job_failure")
