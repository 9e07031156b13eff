"""templates.last_error: why a template was switched off (a schedule the recurrence
manager could not evaluate, or an administrator); and an index for listing one
merchant's templates page by page.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: instant on PostgreSQL, a plain ADD COLUMN on SQLite.
    with op.batch_alter_table("templates") as batch:
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    op.create_index(
        "idx_templates_merchant_id_created_at", "templates", ["merchant_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("idx_templates_merchant_id_created_at", table_name="templates")
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("last_error")
