"""Helpers for tests that drive the store's functions directly (the store tests and the
conformance suite): a worker's claim, a job brought to ``running``, a lapsed lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select

from taskmill.store import claims
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job
from taskmill.store.schema import jobs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


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
