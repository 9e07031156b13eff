"""workers.task_types: the task types each worker runs, so that jobs of a type no live
worker runs can be pointed out instead of waiting in silence.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: instant on PostgreSQL. NULL: a worker that started before this
    # revision and did not say (it is assumed to run anything).
    kind = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("task_types", kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("task_types")
