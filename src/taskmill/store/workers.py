"""The worker registry (seed 002): who is running, where, and when it last spoke."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.schema import jobs, workers

RUNNING_PER_WORKER = 50


class WorkerStatus(enum.StrEnum):
    ALIVE = "alive"
    STOPPED = "stopped"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    status: WorkerStatus
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    task_types: list[str] | None = None  # None: not said (a worker older than 0005)


def _to_worker(row: Row[Any]) -> WorkerInfo:
    m = row._mapping
    return WorkerInfo(
        id=m["id"],
        hostname=m["hostname"],
        pid=m["pid"],
        queues=list(m["queues"]),
        concurrency=m["concurrency"],
        status=WorkerStatus(m["status"]),
        started_at=m["started_at"],
        heartbeat_at=m["heartbeat_at"],
        stopped_at=m["stopped_at"],
        task_types=None if m["task_types"] is None else list(m["task_types"]),
    )


async def register(
    db: Database,
    worker_id: str,
    hostname: str,
    pid: int,
    queues: Sequence[str],
    concurrency: int,
    task_types: Sequence[str] | None = None,
) -> None:
    """Record a starting worker (its heartbeat starts now, on the database clock).

    A configured ``worker.worker_id`` is reused across restarts: the row is taken over.
    """
    now = db.dialect.db_now()
    values = {
        "hostname": hostname,
        "pid": pid,
        "queues": list(queues),
        "concurrency": concurrency,
        "task_types": None if task_types is None else sorted(task_types),
        "status": WorkerStatus.ALIVE.value,
        "started_at": now,
        "heartbeat_at": now,
        "stopped_at": None,
    }
    async with db.transaction() as conn:
        await conn.execute(db.dialect.upsert(workers, ["id"], {"id": worker_id, **values}, values))


async def beat(db: Database, worker_id: str) -> bool:
    """Say "still here"; ``False`` if the worker has no row (retention pruned it while
    the worker was silent). A worker marked dead while paused comes back to life: its
    rescued jobs are already fenced off (its leases no longer match)."""
    async with db.transaction() as conn:
        result = await conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(heartbeat_at=db.dialect.db_now(), status=WorkerStatus.ALIVE.value)
        )
    return bool(result.rowcount)


async def stop(db: Database, worker_id: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            update(workers)
            .where(workers.c.id == worker_id)
            .values(status=WorkerStatus.STOPPED.value, stopped_at=db.dialect.db_now())
        )


async def mark_dead(db: Database, silent_for_seconds: float) -> list[str]:
    """Mark workers silent for longer than ``silent_for_seconds`` dead; return their ids.

    The jobs a dead worker holds are rescued at once (``claims.expire_leases``), without
    waiting for each lease to run out."""
    cutoff = db.dialect.db_now(-silent_for_seconds)
    stmt = (
        update(workers)
        .where(workers.c.status == WorkerStatus.ALIVE.value, workers.c.heartbeat_at < cutoff)
        .values(status=WorkerStatus.DEAD.value)
        .returning(workers.c.id)
    )
    async with db.transaction() as conn:
        return list((await conn.execute(stmt)).scalars().all())


async def live_task_types(db: Database) -> set[str] | None:
    """The task types some live worker runs; ``None`` if a live worker did not say which
    (it may run any)."""
    async with db.read() as conn:
        return await live_task_types_in(conn)


async def live_task_types_in(conn: AsyncConnection) -> set[str] | None:
    """:func:`live_task_types` in the caller's transaction."""
    stmt = select(workers.c.task_types).where(workers.c.status == WorkerStatus.ALIVE.value)
    lists = (await conn.execute(stmt)).scalars().all()
    if any(types is None for types in lists):
        return None
    return {task_type for types in lists for task_type in types}


async def list_workers(db: Database) -> list[WorkerInfo]:
    async with db.read() as conn:
        rows = (await conn.execute(select(workers).order_by(workers.c.started_at))).all()
    return [_to_worker(row) for row in rows]


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job a worker runs now, and for how long (database clock)."""

    job_id: str
    merchant_id: str
    task_type: str
    attempt: int
    started_at: datetime
    running_seconds: float


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """The jobs one worker runs now: the longest-running :data:`RUNNING_PER_WORKER`
    first, and how many there are in all."""

    jobs: list[RunningJob]
    total: int


async def running_by_worker(
    db: Database, merchant_id: MerchantScope, *, per_worker: int = RUNNING_PER_WORKER
) -> dict[str, WorkerLoad]:
    """Per worker id, the ``running`` jobs of ``merchant_id`` (every merchant's with
    ``ALL_MERCHANTS``): at most ``per_worker`` each, the longest-running first, and the
    total. Workers are shared; the jobs on them are not, so a merchant sees only its own.
    Reads ``running`` jobs only (``idx_jobs_status_lease_expires_at`` leads with status)."""
    if not 1 <= per_worker <= 1000:
        raise ValueError("per_worker must be between 1 and 1000")
    scope = [jobs.c.status == JobStatus.RUNNING, jobs.c.worker_id.is_not(None)]
    if merchant_id is not ALL_MERCHANTS:
        scope.append(jobs.c.merchant_id == merchant_id)
    ranked = (
        select(
            jobs.c.id,
            jobs.c.merchant_id,
            jobs.c.task_type,
            jobs.c.attempt,
            jobs.c.started_at,
            jobs.c.worker_id,
            func.row_number()
            .over(partition_by=jobs.c.worker_id, order_by=(jobs.c.started_at, jobs.c.id))
            .label("rank"),
            func.count().over(partition_by=jobs.c.worker_id).label("total"),
        )
        .where(*scope)
        .subquery()
    )
    stmt = (
        select(ranked, db.dialect.db_now().label("db_now"))
        .where(ranked.c.rank <= per_worker)
        .order_by(ranked.c.worker_id, ranked.c.rank)
    )
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    found: dict[str, WorkerLoad] = {}
    for row in rows:
        load = found.setdefault(row.worker_id, WorkerLoad([], row.total))
        load.jobs.append(
            RunningJob(
                job_id=row.id,
                merchant_id=row.merchant_id,
                task_type=row.task_type,
                attempt=row.attempt,
                started_at=row.started_at,
                running_seconds=max(0.0, (row.db_now - row.started_at).total_seconds()),
            )
        )
    return found
