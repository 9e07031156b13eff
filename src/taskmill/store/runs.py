"""``job_runs``: one row per attempt (seed 002's TaskRun)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.jobs import JobRun, RunOutcome
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.dialect import Dialect
from taskmill.store.records import to_run
from taskmill.store.schema import job_runs, jobs


async def start_runs(conn: AsyncConnection, claimed: Sequence[Row[Any]]) -> None:
    """Open a run for each freshly claimed job row (same transaction as the claim)."""
    if not claimed:
        return
    await conn.execute(
        insert(job_runs),
        [
            {
                "job_id": row.id,
                "attempt": row.attempt,
                "worker_id": row.worker_id,
                "started_at": row.started_at,
            }
            for row in claimed
        ],
    )


async def finish_runs(
    conn: AsyncConnection,
    dialect: Dialect,
    keys: Sequence[tuple[str, int]],
    outcome: RunOutcome,
    error: str | None = None,
    duration_seconds: float | None = None,
) -> None:
    """Close the open runs ``(job_id, attempt)`` with ``outcome``; closed runs stay as they are."""
    if not keys:
        return
    await conn.execute(
        update(job_runs)
        .where(
            tuple_(job_runs.c.job_id, job_runs.c.attempt).in_(list(keys)),
            job_runs.c.finished_at.is_(None),
        )
        .values(
            finished_at=dialect.db_now(),
            outcome=outcome.value,
            error=error,
            duration_seconds=duration_seconds,
        )
    )


async def list_runs(db: Database, job_id: str, merchant_id: MerchantScope) -> list[JobRun]:
    """Every attempt of ``job_id``, oldest first (scoped to ``merchant_id`` when given)."""
    stmt = select(job_runs).where(job_runs.c.job_id == job_id).order_by(job_runs.c.attempt)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.join(jobs, jobs.c.id == job_runs.c.job_id).where(
            jobs.c.merchant_id == merchant_id
        )
    async with db.read() as conn:
        return [to_run(row) for row in (await conn.execute(stmt)).all()]


async def close_runs(
    conn: AsyncConnection,
    runs: Sequence[tuple[str, int, float | None]],
    outcome: RunOutcome,
    now: datetime,
) -> None:
    """Close many open runs ``(job_id, attempt, duration)`` with one multi-row update."""
    if not runs:
        return
    stmt = (
        update(job_runs)
        .where(
            job_runs.c.job_id == bindparam("b_job_id"),
            job_runs.c.attempt == bindparam("b_attempt"),
            job_runs.c.finished_at.is_(None),
        )
        .values(
            finished_at=now,
            outcome=outcome.value,
            duration_seconds=bindparam("b_duration", type_=job_runs.c.duration_seconds.type),
        )
    )
    params = [{"b_job_id": j, "b_attempt": a, "b_duration": d} for j, a, d in runs]
    await conn.execute(stmt, params)
