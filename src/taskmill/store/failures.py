"""The newest failed jobs of a merchant, for grouping by error (``core/failures.py``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from taskmill.core.errors import ValidationError
from taskmill.core.failures import ERROR_HEAD_CHARS, FailedJob
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.schema import jobs

MAX_FAILED_JOBS = 10_000


async def newest_failed(
    db: Database, merchant_id: MerchantScope, *, since: datetime | None, limit: int
) -> list[FailedJob]:
    """Up to ``limit`` of the merchant's ``failed`` jobs that finished at or after
    ``since`` (any time when ``None``), newest first (the job id breaks ties), each with
    the head of its error only (its first ``ERROR_HEAD_CHARS`` + 200 characters, enough
    for the first line grouping reads: a long traceback is never read whole)."""
    if not 1 <= limit <= MAX_FAILED_JOBS:
        raise ValidationError("limit", f"must be between 1 and {MAX_FAILED_JOBS}")
    head = func.substr(jobs.c.last_error, 1, ERROR_HEAD_CHARS + 200)
    stmt = select(jobs.c.id, jobs.c.task_type, head.label("error"), jobs.c.finished_at).where(
        jobs.c.status == JobStatus.FAILED
    )
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    if since is not None:
        stmt = stmt.where(jobs.c.finished_at >= since)
    stmt = stmt.order_by(jobs.c.finished_at.desc().nulls_last(), jobs.c.id.desc()).limit(limit)
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [FailedJob(r.id, r.task_type, r.error, r.finished_at) for r in rows]
