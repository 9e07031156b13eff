"""jobs.on_dependency_failure: what a job does when an upstream job fails or is cancelled.

``cancel`` (the default, and the value existing rows get) or ``run``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant server default: instant on PostgreSQL 11+ (no table rewrite), a plain
    # ADD COLUMN on SQLite.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column(
                "on_dependency_failure",
                sa.String(20),
                nullable=False,
                server_default="cancel",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("on_dependency_failure")
