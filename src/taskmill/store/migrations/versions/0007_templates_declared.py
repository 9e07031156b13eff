"""templates.declared: templates ``@app.periodic`` declared, so that an app's start can
switch off those its code no longer declares (and never those made through the API).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: instant on PostgreSQL (no table rewrite).
    with op.batch_alter_table("templates") as batch:
        batch.add_column(
            sa.Column("declared", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("templates") as batch:
        batch.drop_column("declared")
