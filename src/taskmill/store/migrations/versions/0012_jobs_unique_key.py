"""jobs.unique_key and its partial unique index: one unfinished job per merchant and key.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_HELD = sa.text("unique_key IS NOT NULL AND status IN ('scheduled', 'queued', 'running')")


def upgrade() -> None:
    # A nullable column without a default: no table rewrite on PostgreSQL; the index
    # is empty at first (every existing row has no key).
    op.add_column("jobs", sa.Column("unique_key", sa.String(200), nullable=True))
    op.create_index(
        "idx_jobs_merchant_id_unique_key",
        "jobs",
        ["merchant_id", "unique_key"],
        unique=True,
        postgresql_where=_HELD,
        sqlite_where=_HELD,
    )


def downgrade() -> None:
    op.drop_index("idx_jobs_merchant_id_unique_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("unique_key")
