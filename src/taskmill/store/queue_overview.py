"""Read-only per-queue numbers of one merchant, for ``GET /queues`` and the UI's queues page.

Bounded like ``stats.py``: unfinished jobs are counted grouped by queue and status
(``idx_jobs_status_queue_priority`` leads with the status); finished jobs, which grow
forever, are counted from the merchant's newest :data:`~taskmill.store.stats.EVENT_SCAN_LIMIT`
events (``idx_events_merchant_id_id``), each joined to its job by primary key for its
queue. At most :data:`MAX_QUEUES` queues are returned, by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import UNFINISHED_STATUSES, JobStatus
from taskmill.store.database import Database
from taskmill.store.schema import events, jobs
from taskmill.store.stats import EVENT_SCAN_LIMIT

MAX_QUEUES = 200
SHORT_WINDOW_MINUTES = 5
LONG_WINDOW_MINUTES = 60


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One queue of one merchant: its jobs now and what finished recently."""

    queue: str
    queued: int
    scheduled: int
    running: int
    oldest_due_age_seconds: float | None
    """Age of the oldest job due and not running (queued, or scheduled with ``run_at``
    passed); ``None`` when none is due."""
    succeeded_5m: int = 0
    failed_5m: int = 0
    succeeded_60m: int = 0
    failed_60m: int = 0


@dataclass(frozen=True, slots=True)
class QueueOverview:
    """A merchant's queues (at most :data:`MAX_QUEUES`, by name) and how they were read."""

    queues: list[QueueStats]
    now: datetime
    truncated: bool
    """More queues than :data:`MAX_QUEUES`, or more recent events than one scan reads."""


async def queue_stats(db: Database, merchant_id: str, *, now: datetime) -> QueueOverview:
    """The merchant's queues (``merchant_id`` is required: never unscoped). ``now`` is the
    app clock, against which ``run_at`` is judged; the windows follow the database clock,
    on which outcomes are recorded."""
    async with db.read() as conn:
        db_now: datetime = (await conn.execute(select(db.dialect.db_now()))).scalar_one()
        unfinished = await _unfinished(conn, merchant_id, now)
        finished, scan_full = await _finished(conn, merchant_id, db_now)
    names = sorted(unfinished.keys() | finished.keys())
    queues = [
        _merge(name, unfinished.get(name), finished.get(name), now) for name in names[:MAX_QUEUES]
    ]
    return QueueOverview(queues, db_now, len(names) > MAX_QUEUES or scan_full)


_Unfinished = dict[JobStatus, tuple[int, datetime | None]]


async def _unfinished(
    conn: AsyncConnection, merchant_id: str, now: datetime
) -> dict[str, _Unfinished]:
    due = or_(
        jobs.c.status == JobStatus.QUEUED,
        and_(jobs.c.status == JobStatus.SCHEDULED, jobs.c.run_at <= now),
    )
    stmt = (
        select(jobs.c.queue, jobs.c.status, func.count(), func.min(case((due, jobs.c.run_at))))
        .where(jobs.c.merchant_id == merchant_id, jobs.c.status.in_(sorted(UNFINISHED_STATUSES)))
        .group_by(jobs.c.queue, jobs.c.status)
    )
    found: dict[str, _Unfinished] = {}
    for queue, status, count, oldest_due in (await conn.execute(stmt)).all():
        found.setdefault(queue, {})[JobStatus(status)] = (count, oldest_due)
    return found


async def _finished(
    conn: AsyncConnection, merchant_id: str, db_now: datetime
) -> tuple[dict[str, dict[str, int]], bool]:
    """Per queue, jobs that succeeded or failed (no attempt left) in the last 5 and 60
    minutes; and whether the scan of recent events stopped short of the hour."""
    long_start = db_now - timedelta(minutes=LONG_WINDOW_MINUTES)
    short_start = db_now - timedelta(minutes=SHORT_WINDOW_MINUTES)
    newest = (
        select(events.c.occurred_at, events.c.type, events.c.job_id)
        .where(events.c.merchant_id == merchant_id)
        .order_by(events.c.id.desc())
        .limit(EVENT_SCAN_LIMIT)
        .subquery()
    )
    succeeded = newest.c.type == EventType.JOB_SUCCEEDED.value
    failed = newest.c.type == EventType.JOB_FAILED.value
    recent = newest.c.occurred_at >= short_start

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    stmt = (
        select(
            jobs.c.queue,
            count(succeeded),
            count(failed),
            count(and_(succeeded, recent)),
            count(and_(failed, recent)),
        )
        .select_from(newest.join(jobs, jobs.c.id == newest.c.job_id))
        .where(or_(succeeded, failed), newest.c.occurred_at >= long_start)
        .group_by(jobs.c.queue)
    )
    rows = (await conn.execute(stmt)).all()
    scanned, oldest = (
        await conn.execute(select(func.count(), func.min(newest.c.occurred_at)))
    ).one()
    truncated = scanned >= EVENT_SCAN_LIMIT and oldest is not None and oldest > long_start
    found = {
        queue: {"succeeded_60m": s60, "failed_60m": f60, "succeeded_5m": s5, "failed_5m": f5}
        for queue, s60, f60, s5, f5 in rows
    }
    return found, truncated


def _merge(
    name: str, now_counts: _Unfinished | None, done: dict[str, int] | None, now: datetime
) -> QueueStats:
    now_counts = now_counts or {}
    due_times = [oldest for _, oldest in now_counts.values() if oldest is not None]
    oldest_due = min(due_times) if due_times else None
    return QueueStats(
        queue=name,
        queued=now_counts.get(JobStatus.QUEUED, (0, None))[0],
        scheduled=now_counts.get(JobStatus.SCHEDULED, (0, None))[0],
        running=now_counts.get(JobStatus.RUNNING, (0, None))[0],
        oldest_due_age_seconds=(
            None if oldest_due is None else max(0.0, (now - oldest_due).total_seconds())
        ),
        **(done or {}),
    )
