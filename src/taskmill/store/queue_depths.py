"""Queue depths for operators: every merchant's unfinished jobs per queue, and the live
workers serving each queue (``taskmill queues list``)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from taskmill.core.jobs import JobStatus
from taskmill.store.database import Database
from taskmill.store.schema import jobs, workers
from taskmill.store.workers import WorkerStatus

MAX_QUEUES = 1000
# Live workers read to learn which queues they serve: far more than any deployment runs.
MAX_WORKERS = 10_000
_COUNTED = (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One queue's unfinished jobs (every merchant's) and the live workers serving it."""

    name: str
    scheduled: int = 0
    queued: int = 0
    running: int = 0
    workers: int = 0


async def queue_depths(db: Database, *, limit: int = MAX_QUEUES) -> list[QueueDepth]:
    """The queues that have unfinished jobs or a live worker, by name, at most ``limit``
    (1-1000) of them: with more queues than that, the list is cut (the caller says so
    when it gets ``limit`` queues). Counts by status go through
    ``idx_jobs_status_queue_priority``: finished jobs are never read."""
    if not 1 <= limit <= MAX_QUEUES:
        raise ValueError(f"limit must be between 1 and {MAX_QUEUES}")
    counts_stmt = (
        select(jobs.c.queue, *(func.count().filter(jobs.c.status == s) for s in _COUNTED))
        .where(jobs.c.status.in_(_COUNTED))
        .group_by(jobs.c.queue)
        .order_by(jobs.c.queue)
        .limit(limit)
    )
    served_stmt = (
        select(workers.c.queues)
        .where(workers.c.status == WorkerStatus.ALIVE.value)
        .limit(MAX_WORKERS)
    )
    async with db.read() as conn:
        counts = (await conn.execute(counts_stmt)).all()
        served = (await conn.execute(served_stmt)).scalars().all()
    by_queue = {
        queue: {"scheduled": scheduled, "queued": queued, "running": running}
        for queue, scheduled, queued, running in counts
    }
    for queues in served:
        for queue in queues:
            row = by_queue.setdefault(queue, {})
            row["workers"] = row.get("workers", 0) + 1
    # A queue only workers name may sort before the last counted one: cut again.
    return [QueueDepth(name, **by_queue[name]) for name in sorted(by_queue)[:limit]]
