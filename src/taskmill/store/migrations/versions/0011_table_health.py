"""Table health: the claim's index in claim order, and autovacuum and fill factor
settings for the tables a job queue churns (PostgreSQL only; docs/adr/0012-table-health.md).

``idx_jobs_claim_order`` (status, priority DESC, run_at, id) replaces
``idx_jobs_status_queue_priority``: the claim reads queued jobs in exactly this order and
stops at its ``LIMIT``, where the old index left it sorting every queued job of the queue
(17 ms at 20,000 queued on a freshly vacuumed table, hundreds of milliseconds with dead
row versions; bench/README.md). ``queue`` is no column of it: ``queue = ANY(...)``
on an index column before the order's would make PostgreSQL 15 sort again; it is a filter.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Per-table autovacuum settings. PostgreSQL's defaults vacuum a table once 20 % of it is
# dead (scale factor 0.2, threshold 50): a queue whose rows are updated 3-4 times each
# in minutes piles up far more than that between vacuums, and the claim reads through
# it. Small scale factors with a floor, as queue systems on PostgreSQL advise.
_BUSY = {  # updated on every transition or run (thousands of rows)
    "autovacuum_vacuum_scale_factor": 0.01,
    "autovacuum_vacuum_threshold": 1000,
    "autovacuum_analyze_scale_factor": 0.02,
    "autovacuum_analyze_threshold": 1000,
}
_TINY = {  # a few rows updated over and over (a heartbeat, a cursor, a progress report)
    "autovacuum_vacuum_scale_factor": 0.0,
    "autovacuum_vacuum_threshold": 200,
}
_APPEND_ONLY = {  # events: inserted, deleted only by the pruner
    "autovacuum_vacuum_scale_factor": 0.05,
    "autovacuum_vacuum_insert_scale_factor": 0.05,
    "autovacuum_analyze_scale_factor": 0.05,
}
# Fill factor: room left on each page so that an update changing no indexed column stays
# on its page (a HOT update: no index entry, pruned without VACUUM). Not on jobs: every
# transition changes status, an indexed column, so HOT never applies there and free room
# would only make the table larger.
_FILL = {"job_runs": 80, "workers": 50, "job_progress": 70, "event_cursors": 50}
SETTINGS: dict[str, dict[str, float | int]] = {
    "jobs": _BUSY,
    "job_runs": {**_BUSY, "fillfactor": _FILL["job_runs"]},
    "events": _APPEND_ONLY,
    "workers": {**_TINY, "fillfactor": _FILL["workers"]},
    "job_progress": {**_TINY, "fillfactor": _FILL["job_progress"]},
    "event_cursors": {**_TINY, "fillfactor": _FILL["event_cursors"]},
}

_CLAIM_ORDER = (sa.text("status"), sa.text("priority DESC"), sa.text("run_at"), sa.text("id"))


def upgrade() -> None:
    # A plain CREATE INDEX: CONCURRENTLY cannot run in the migration's transaction. On a
    # large jobs table, build it beforehand with CREATE INDEX CONCURRENTLY under this
    # name (docs/howto/operating.md): if_not_exists then skips it.
    op.create_index("idx_jobs_claim_order", "jobs", list(_CLAIM_ORDER), if_not_exists=True)
    op.drop_index("idx_jobs_status_queue_priority", table_name="jobs")
    dialect = op.get_bind().dialect
    if dialect.name != "postgresql":
        return  # SQLite has no per-table storage parameters (nor dead row versions)
    for table, settings in _supported(dialect.server_version_info).items():
        options = ", ".join(f"{name} = {value}" for name, value in settings.items())
        op.execute(f"ALTER TABLE {table} SET ({options})")


def _supported(version: tuple[int | str, ...] | None) -> dict[str, dict[str, float | int]]:
    """:data:`SETTINGS` without the parameters ``version`` of PostgreSQL lacks (the insert
    thresholds came in 13)."""
    major = version[0] if version else 0
    if isinstance(major, int) and major >= 13:
        return SETTINGS
    return {t: {k: v for k, v in s.items() if "insert" not in k} for t, s in SETTINGS.items()}


def downgrade() -> None:
    dialect = op.get_bind().dialect
    if dialect.name == "postgresql":
        for table, settings in _supported(dialect.server_version_info).items():
            op.execute(f"ALTER TABLE {table} RESET ({', '.join(settings)})")
    op.create_index("idx_jobs_status_queue_priority", "jobs", ["status", "queue", "priority"])
    op.drop_index("idx_jobs_claim_order", table_name="jobs")
