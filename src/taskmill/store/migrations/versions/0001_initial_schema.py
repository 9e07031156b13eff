"""Initial schema: tenants, jobs, templates, runs, workers, events, dependencies.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DEFAULT_MERCHANT_ID = "00000000-0000-0000-0000-000000000000"
JOB_STATUSES = ("scheduled", "queued", "running", "succeeded", "failed", "cancelled")
SCHEDULE_TYPES = ("immediate", "one_time", "interval", "cron")


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, nullable: bool = False) -> sa.Column[object]:
    kind = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    return sa.Column(name, kind, nullable=nullable)


def _id(name: str = "id", nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(36), nullable=nullable)


def _big_id() -> sa.Column[int]:
    kind = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column("id", kind, autoincrement=True, nullable=False)


def upgrade() -> None:
    job_status = sa.Enum(*JOB_STATUSES, name="job_status")
    schedule_type = sa.Enum(*SCHEDULE_TYPES, name="schedule_type")

    merchants = op.create_table(
        "merchants",
        _id(),
        sa.Column("name", sa.String(200), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_merchants"),
    )
    op.create_table(
        "users",
        _id(),
        _id("merchant_id", nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name="fk_users_merchants"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "api_keys",
        _id(),
        _id("merchant_id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        _json("scopes"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name="fk_api_keys_merchants"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_table(
        "templates",
        _id(),
        _id("merchant_id"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("task_type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _json("payload", nullable=True),
        sa.Column("schedule_type", schedule_type, nullable=False),
        sa.Column("cron_expression", sa.String(200), nullable=True),
        sa.Column("interval_seconds", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        _ts("start_at", nullable=True),
        _ts("end_at", nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("next_run_at", nullable=True),
        _ts("last_scheduled_for", nullable=True),
        sa.Column("misfire_policy", sa.String(20), nullable=False),
        sa.Column("overlap_policy", sa.String(20), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name="fk_templates_merchants"),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
        sa.UniqueConstraint("merchant_id", "name", name="uq_templates_merchant_id_name"),
    )
    op.create_index("idx_templates_active_next_run_at", "templates", ["active", "next_run_at"])

    op.create_table(
        "jobs",
        _id(),
        _id("merchant_id"),
        _id("template_id", nullable=True),
        sa.Column("task_type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        _json("payload", nullable=True),
        sa.Column("status", job_status, nullable=False),
        sa.Column("schedule_type", schedule_type, nullable=False),
        _ts("run_at"),
        _ts("scheduled_for", nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("worker_id", sa.String(100), nullable=True),
        _ts("lease_expires_at", nullable=True),
        _ts("queued_at", nullable=True),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        _json("result", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"], name="fk_jobs_merchants"),
        sa.ForeignKeyConstraint(
            ["template_id"], ["templates.id"], name="fk_jobs_templates", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint(
            "merchant_id", "idempotency_key", name="uq_jobs_merchant_id_idempotency_key"
        ),
        sa.UniqueConstraint(
            "template_id", "scheduled_for", name="uq_jobs_template_id_scheduled_for"
        ),
    )
    op.create_index("idx_jobs_status_run_at", "jobs", ["status", "run_at"])
    op.create_index("idx_jobs_status_queue_priority", "jobs", ["status", "queue", "priority"])
    op.create_index("idx_jobs_status_lease_expires_at", "jobs", ["status", "lease_expires_at"])
    op.create_index("idx_jobs_merchant_id_created_at", "jobs", ["merchant_id", "created_at"])

    op.create_table(
        "job_dependencies",
        _id("job_id"),
        _id("depends_on_job_id"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_dependencies_jobs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["depends_on_job_id"],
            ["jobs.id"],
            name="fk_job_dependencies_jobs_upstream",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "depends_on_job_id", name="pk_job_dependencies"),
    )
    op.create_index(
        "idx_job_dependencies_depends_on_job_id", "job_dependencies", ["depends_on_job_id"]
    )

    op.create_table(
        "job_runs",
        _big_id(),
        _id("job_id"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(100), nullable=False),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_runs_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_job_runs_job_id_attempt"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        _json("queues"),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _ts("started_at"),
        _ts("heartbeat_at"),
        _ts("stopped_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_table(
        "events",
        _big_id(),
        _ts("occurred_at"),
        _id("merchant_id"),
        sa.Column("type", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        _id("job_id", nullable=True),
        _id("template_id", nullable=True),
        _json("data"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("idx_events_job_id", "events", ["job_id"])
    op.create_index("idx_events_merchant_id_id", "events", ["merchant_id", "id"])

    # The tenant the embedded library works in (seed 003 has no tenants).
    op.bulk_insert(
        merchants,
        [{"id": DEFAULT_MERCHANT_ID, "name": "default", "created_at": datetime.now(UTC)}],
    )


def downgrade() -> None:
    for table in (
        "events",
        "workers",
        "job_runs",
        "job_dependencies",
        "jobs",
        "templates",
        "api_keys",
        "users",
        "merchants",
    ):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TYPE IF EXISTS job_status")
        op.execute("DROP TYPE IF EXISTS schedule_type")
