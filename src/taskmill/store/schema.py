"""Every table, in SQLAlchemy Core. The Alembic migrations must produce exactly this.

Names follow seed 002: tables plural snake_case, ``idx_{table}_{columns}``,
``fk_{table}_{referenced_table}``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from taskmill.core.jobs import JobStatus, ScheduleType
from taskmill.store.types import UtcDateTime, big_id, json_type

NAMING_CONVENTION = {
    "ix": "idx_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Seed 000 asks for ENUM types; on SQLite they are plain strings (no CHECK, so adding a
# value later needs no table rebuild).
job_status = Enum(
    JobStatus,
    name="job_status",
    values_callable=lambda e: [m.value for m in e],
    validate_strings=True,
)
schedule_type = Enum(
    ScheduleType,
    name="schedule_type",
    values_callable=lambda e: [m.value for m in e],
    validate_strings=True,
)

ID = 36  # uuid4 text

# The rows whose unique key is held: unfinished ones (core.jobs.UNIQUE_WHILE).
UNIQUE_ACTIVE = text("unique_key IS NOT NULL AND status IN ('scheduled', 'queued', 'running')")

merchants = Table(
    "merchants",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("merchant_id", String(ID), ForeignKey("merchants.id"), nullable=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("role", String(50), nullable=False),
    Column("password_hash", String(200), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("merchant_id", String(ID), ForeignKey("merchants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(40), nullable=False, unique=True),
    Column("key_hash", String(128), nullable=False),
    Column("scopes", json_type(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("last_used_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("merchant_id", String(ID), ForeignKey("merchants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("task_type", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("payload", json_type(), nullable=True),
    Column("schedule_type", schedule_type, nullable=False),
    Column("cron_expression", String(200), nullable=True),
    Column("interval_seconds", Float, nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("start_at", UtcDateTime(), nullable=True),
    Column("end_at", UtcDateTime(), nullable=True),
    Column("active", Boolean, nullable=False),
    Column("next_run_at", UtcDateTime(), nullable=True),
    Column("last_scheduled_for", UtcDateTime(), nullable=True),
    Column("misfire_policy", String(20), nullable=False),
    Column("overlap_policy", String(20), nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_seconds", Float, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    # Why the recurrence manager switched the template off (its schedule could not be
    # evaluated), or an administrator did; cleared when its owner changes it.
    Column("last_error", Text, nullable=True),
    # Declared by ``@app.periodic`` (migration 0007): switched off at an app's start when
    # its code no longer declares it; never set for templates made through the API.
    Column("declared", Boolean, nullable=False, server_default=false()),
    # ``JobFailurePolicy`` (migration 0009): ``disable`` switches the template off when one
    # of its jobs fails for good.
    Column("on_job_failure", String(20), nullable=False, server_default="keep"),
    UniqueConstraint("merchant_id", "name"),
    Index("idx_templates_active_next_run_at", "active", "next_run_at"),
    Index("idx_templates_merchant_id_created_at", "merchant_id", "created_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("merchant_id", String(ID), ForeignKey("merchants.id"), nullable=False),
    Column(
        "template_id",
        String(ID),
        ForeignKey("templates.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("task_type", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("payload", json_type(), nullable=True),
    Column("status", job_status, nullable=False),
    Column("schedule_type", schedule_type, nullable=False),
    Column("run_at", UtcDateTime(), nullable=False),
    Column("scheduled_for", UtcDateTime(), nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_seconds", Float, nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("worker_id", String(100), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("queued_at", UtcDateTime(), nullable=True),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("result", json_type(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("trace_context", String(512), nullable=True),
    # DependencyFailurePolicy; the server default fills rows older than migration 0003.
    Column("on_dependency_failure", String(20), nullable=False, server_default="cancel"),
    # A producer's key held while the job is unfinished (migration 0012, ADR 0013).
    Column("unique_key", String(200), nullable=True),
    # One instance per template tick, whoever creates it (several recurrence managers).
    UniqueConstraint("template_id", "scheduled_for"),
    UniqueConstraint("merchant_id", "idempotency_key"),
    # Due jobs: WHERE status = 'scheduled' AND run_at <= now ORDER BY run_at.
    Index("idx_jobs_status_run_at", "status", "run_at"),
    Index("idx_jobs_status_lease_expires_at", "status", "lease_expires_at"),
    Index("idx_jobs_merchant_id_created_at", "merchant_id", "created_at"),
    # At most one unfinished job per merchant and unique key: the database refuses a
    # second, whatever the race between producers (ADR 0013).
    Index(
        "idx_jobs_merchant_id_unique_key",
        "merchant_id",
        "unique_key",
        unique=True,
        postgresql_where=UNIQUE_ACTIVE,
        sqlite_where=UNIQUE_ACTIVE,
    ),
)

# Claims: WHERE status = 'queued' ORDER BY priority DESC, run_at, id LIMIT n, read in index
# order, stopping at the limit (migration 0011; queue is a filter: see the migration).
Index("idx_jobs_claim_order", jobs.c.status, jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)

job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", String(ID), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column(
        "depends_on_job_id",
        String(ID),
        ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_dependencies_jobs_upstream"),
        nullable=False,
    ),
    PrimaryKeyConstraint("job_id", "depends_on_job_id"),
    Index("idx_job_dependencies_depends_on_job_id", "depends_on_job_id"),
)

# The latest progress each job's handler reported (migration 0008): a row of its own, so
# that reports (up to one a second per running job) never add row versions to ``jobs``.
job_progress = Table(
    "job_progress",
    metadata,
    Column(
        "job_id",
        String(ID),
        ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_progress_jobs"),
        primary_key=True,
    ),
    Column("attempt", Integer, nullable=False),
    Column("fraction", Float, nullable=False),
    Column("message", String(200), nullable=True),
    Column("reported_at", UtcDateTime(), nullable=False),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("job_id", String(ID), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", String(100), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("outcome", String(20), nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_seconds", Float, nullable=True),
    UniqueConstraint("job_id", "attempt"),
)

# How far each event handler (``@app.on_event``) has read the log, and which process
# holds it (migration 0009): one process at a time, another after its lease expires.
event_cursors = Table(
    "event_cursors",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("leased_by", String(200), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# A token bucket per rate-limited task type (migration 0013, ADR 0014): every claim of
# the type takes its tokens from this row, so the limit holds across executors.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("task_type", String(200), primary_key=True),
    Column("per_second", Float, nullable=False),
    Column("burst", Integer, nullable=False),
    Column("tokens", Float, nullable=False),
    Column("refilled_at", UtcDateTime(), nullable=False),
    Column("declared_by", String(100), nullable=False),
    Column("declared_at", UtcDateTime(), nullable=False),
)

# A row per paused queue (migration 0006); workers leave its jobs queued.
queue_pauses = Table(
    "queue_pauses",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("paused_at", UtcDateTime(), nullable=False),
    Column("paused_by", String(200), nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", json_type(), nullable=False),
    Column("concurrency", Integer, nullable=False),
    # The task types it runs; NULL for a worker from before revision 0005 (unknown).
    Column("task_types", json_type(), nullable=True),
    Column("status", String(20), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("stopped_at", UtcDateTime(), nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("id", big_id(), primary_key=True, autoincrement=True),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("merchant_id", String(ID), nullable=False),
    Column("type", String(50), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("job_id", String(ID), nullable=True),
    Column("template_id", String(ID), nullable=True),
    Column("data", json_type(), nullable=False),
    Index("idx_events_job_id", "job_id"),
    Index("idx_events_merchant_id_id", "merchant_id", "id"),
)

# A template's own events (no job): the pruner finds a deleted template's events through
# it (migration 0010). Partial, so the job events written on every transition skip it.
_template_own_event = events.c.job_id.is_(None) & events.c.template_id.is_not(None)
Index(
    "idx_events_template_id",
    events.c.template_id,
    postgresql_where=_template_own_event,
    sqlite_where=_template_own_event,
)
