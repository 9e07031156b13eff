"""Helpers for tests that drive the store's functions directly (the store tests and the
conformance suite): a worker's claim, a job brought to ``running``, a lapsed lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims
from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.jobs import NewJob, create_job
from taskmill.store.outcomes import Attempt, Failure, Success
from taskmill.store.schema import jobs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DUE = datetime.now(UTC) - timedelta(days=60)  # before every retention age (finished())


def claim_params(worker: str = "w1", lease: float = 30.0, limit: int = 10) -> claims.ClaimParams:
    """What worker ``worker`` claims: up to ``limit`` jobs of task ``t`` in ``default``."""
    return claims.ClaimParams(
        worker_id=worker, limit=limit, lease_seconds=lease, queues=["default"], task_types=["t"]
    )


async def running_job(
    db: Database, worker: str = "w1", lease: float = 30.0, *, max_attempts: int = 3
) -> str:
    """A new job of task ``t``, queued and claimed by ``worker`` (attempt 1); a negative
    ``lease`` has lapsed already."""
    created = await create_job(
        db, NewJob("t", NOW, max_attempts=max_attempts), actor="test", now=NOW
    )
    await claims.enqueue_due(db, now=NOW, limit=10, actor="test")
    [job] = await claims.claim(db, claim_params(worker, lease))
    assert job.id == created.job.id
    return job.id


async def until_expired(db: Database) -> None:
    """Wait until some lease has lapsed on the database clock."""
    for _ in range(200):
        async with db.read() as conn:
            expired = (
                await conn.execute(
                    select(func.count()).where(jobs.c.lease_expires_at < db.dialect.db_now())
                )
            ).scalar_one()
        if expired:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("lease never expired")


async def _backdate(db: Database, job_id: str, finished_at: datetime) -> None:
    async with db.transaction() as conn:
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(finished_at=finished_at))


async def new_job(store: SqlStore, depends_on: tuple[str, ...] = ()) -> str:
    """A ``scheduled`` job of task ``t``, due long ago."""
    created = await store.create_job(
        NewJob("t", DUE, depends_on=depends_on), actor="test", now=DUE, queue_if_due=False
    )
    return created.job.id


async def finished(
    store: SqlStore,
    status: JobStatus,
    finished_at: datetime,
    depends_on: tuple[str, ...] = (),
) -> str:
    """A job of task ``t`` that ran (succeeded, failed) or was cancelled, finished at
    ``finished_at`` (backdated: the database clock wrote now)."""
    job_id = await new_job(store, depends_on)
    if status is JobStatus.CANCELLED:
        await store.cancel(ALL_MERCHANTS, job_id, reason="test", actor="test")
    else:
        await store.enqueue_due(
            now=datetime.now(UTC), limit=10, actor="test", merchants_in_turn=False
        )
        [job] = await store.claim(claim_params())
        assert job.id == job_id
        attempt = Attempt(job_id, 1, "w1")
        if status is JobStatus.SUCCEEDED:
            await store.record_outcomes([Success(attempt, "ok")], [])
        else:
            await store.record_outcomes([], [(attempt, Failure("boom"))])
    assert (await store.get_job(ALL_MERCHANTS, job_id)).status is status
    await _backdate(store.db, job_id, finished_at)
    return job_id
