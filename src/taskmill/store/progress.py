"""Progress reports: the latest per job (``job_progress``), written in batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.progress import Progress
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.schema import job_progress, jobs


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """One attempt's latest report, to write."""

    job_id: str
    attempt: int
    fraction: float
    message: str | None
    reported_at: datetime


async def record_progress(db: Database, reports: Sequence[ProgressReport]) -> None:
    """Keep each job's latest report, in one transaction; reports of jobs that no longer
    exist are dropped (a job deleted while its handler ran)."""
    if not reports:
        return

    async def record_in(conn: AsyncConnection) -> None:
        ids = [r.job_id for r in reports]
        existing = set((await conn.execute(select(jobs.c.id).where(jobs.c.id.in_(ids)))).scalars())
        for report in reports:
            if report.job_id not in existing:
                continue
            values = {
                "attempt": report.attempt,
                "fraction": report.fraction,
                "message": report.message,
                "reported_at": report.reported_at,
            }
            await conn.execute(
                db.dialect.upsert(
                    job_progress, ["job_id"], {"job_id": report.job_id, **values}, values
                )
            )

    await db.write(record_in)


async def get_progress(db: Database, merchant_id: MerchantScope, job_id: str) -> Progress | None:
    """The progress the job's current attempt reported; ``None`` before its first report
    (an earlier attempt's report is not this attempt's progress)."""
    stmt = (
        select(job_progress)
        .join(jobs, jobs.c.id == job_progress.c.job_id)
        .where(job_progress.c.job_id == job_id, job_progress.c.attempt == jobs.c.attempt)
    )
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    async with db.read() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    return Progress(row.fraction, row.message, row.attempt, row.reported_at)
