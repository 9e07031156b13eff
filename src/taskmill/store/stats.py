"""Read-only aggregates for monitoring: ``/stats`` (one merchant) and ``/metrics`` (all).

Every query is bounded, so a scrape or a dashboard refresh costs the same on a table
of a hundred jobs and one of a hundred million:

* unfinished jobs only (``scheduled``, ``queued``, ``running``) are counted, through the
  status-led indexes; finished jobs grow forever, so they are counted as events in a
  recent window instead;
* the recent window walks at most :data:`EVENT_SCAN_LIMIT` of the merchant's newest
  events backwards on ``idx_events_merchant_id_id`` (``truncated`` says when that was
  not enough to reach the start of the window);
* start lag looks at the merchant's :data:`LAG_SCAN_LIMIT` newest jobs on
  ``idx_jobs_merchant_id_created_at``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import UNFINISHED_STATUSES, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.schema import events, jobs, workers
from taskmill.store.workers import WorkerStatus, live_task_types_in

EVENT_SCAN_LIMIT = 50_000
LAG_SCAN_LIMIT = 500
HEARTBEAT_LIMIT = 500
WINDOW_MINUTES = 60

# Finished attempts, as the series names them. A rescued job (lease expired, attempt
# left) failed an attempt and will run again: a retry, like a handler's failure.
_SERIES = {
    EventType.JOB_SUCCEEDED: "succeeded",
    EventType.JOB_FAILED: "failed",
    EventType.JOB_RETRY_SCHEDULED: "retried",
    EventType.JOB_LEASE_EXPIRED: "retried",
    EventType.JOB_CANCELLED: "cancelled",
}
SERIES_NAMES = ("succeeded", "failed", "retried", "cancelled")
_UNFINISHED = sorted(UNFINISHED_STATUSES)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Due jobs not yet running, and how long the oldest of them has been due."""

    queue: str
    depth: int
    oldest_due_age_seconds: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A live worker and the age of its last heartbeat (database clock)."""

    worker_id: str
    age_seconds: float


@dataclass(frozen=True, slots=True)
class SystemStats:
    """All tenants, for the operator's ``/metrics``."""

    unfinished: dict[JobStatus, int]
    backlog: list[Backlog]
    workers_by_status: dict[str, int]
    heartbeats: list[Heartbeat]
    unserved: dict[str, int] = field(default_factory=dict)
    """Queued jobs per task type that no live worker runs."""


@dataclass(frozen=True, slots=True)
class MinuteCounts:
    """Finished attempts in the minute starting at ``minute``."""

    minute: datetime
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class StartLag:
    """Due-to-start lag of recently created jobs that have started (seconds)."""

    samples: int
    p50: float | None
    p95: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class MerchantStats:
    """One merchant's dashboard: now, the last hour per minute, and start lag."""

    unfinished: dict[JobStatus, int]
    due: int
    oldest_due_age_seconds: float | None
    window_totals: dict[str, int]
    per_minute: list[MinuteCounts]
    start_lag: StartLag
    truncated: bool
    now: datetime
    unserved: dict[str, int] = field(default_factory=dict)
    """The merchant's queued jobs per task type that no live worker runs."""


def _due(now: datetime) -> ColumnElement[bool]:
    """Due and not running: queued, or scheduled with ``run_at`` passed (populator's view)."""
    return or_(
        jobs.c.status == JobStatus.QUEUED,
        and_(jobs.c.status == JobStatus.SCHEDULED, jobs.c.run_at <= now),
    )


async def unserved(conn: AsyncConnection, merchant_id: MerchantScope) -> dict[str, int]:
    """Queued jobs per task type that no live worker runs (they would wait forever):
    empty while a live worker has not said which types it runs (it may run any)."""
    served = await live_task_types_in(conn)
    if served is None:
        return {}
    stmt = (
        select(jobs.c.task_type, func.count())
        .where(jobs.c.status == JobStatus.QUEUED)
        .group_by(jobs.c.task_type)
    )
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    return {
        task_type: n for task_type, n in (await conn.execute(stmt)).all() if task_type not in served
    }


def _age(now: datetime, since: datetime | None) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


async def _unfinished(conn: AsyncConnection, merchant_id: MerchantScope) -> dict[JobStatus, int]:
    stmt = (
        select(jobs.c.status, func.count())
        .where(jobs.c.status.in_(_UNFINISHED))
        .group_by(jobs.c.status)
    )
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    counts = {JobStatus(s): n for s, n in (await conn.execute(stmt)).all()}
    return {status: counts.get(status, 0) for status in _UNFINISHED}


async def system_stats(db: Database, *, now: datetime) -> SystemStats:
    """Every tenant's unfinished jobs, backlog per queue and workers: for ``/metrics``,
    whose reader holds the ``admin`` scope. ``now`` is the app clock (``run_at``'s)."""
    backlog_stmt = (
        select(jobs.c.queue, func.count(), func.min(jobs.c.run_at))
        .where(_due(now))
        .group_by(jobs.c.queue)
    )
    db_now = db.dialect.db_now().label("db_now")
    beats_stmt = (
        select(workers.c.id, workers.c.heartbeat_at, db_now)
        .where(workers.c.status == WorkerStatus.ALIVE.value)
        .order_by(workers.c.heartbeat_at)
        .limit(HEARTBEAT_LIMIT)
    )
    status_stmt = select(workers.c.status, func.count()).group_by(workers.c.status)
    async with db.read() as conn:
        unfinished = await _unfinished(conn, ALL_MERCHANTS)
        backlog = [
            Backlog(queue, depth, _age(now, oldest))
            for queue, depth, oldest in (await conn.execute(backlog_stmt)).all()
        ]
        by_status = {str(s): n for s, n in (await conn.execute(status_stmt)).all()}
        heartbeats = [
            Heartbeat(row.id, _age(row.db_now, row.heartbeat_at))
            for row in (await conn.execute(beats_stmt)).all()
        ]
        waiting = await unserved(conn, ALL_MERCHANTS)
    return SystemStats(unfinished, backlog, by_status, heartbeats, waiting)


async def merchant_stats(db: Database, merchant_id: str, *, now: datetime) -> MerchantStats:
    """One merchant's dashboard numbers (``merchant_id`` is required: never unscoped).

    ``now`` is the app clock, against which ``run_at`` is judged; the per-minute window
    follows the database clock, on which outcomes are recorded.
    """
    due_stmt = select(func.count(), func.min(jobs.c.run_at)).where(
        jobs.c.merchant_id == merchant_id, _due(now)
    )
    async with db.read() as conn:
        unfinished = await _unfinished(conn, merchant_id)
        due, oldest = (await conn.execute(due_stmt)).one()
        db_now: datetime = (await conn.execute(select(db.dialect.db_now()))).scalar_one()
        start = db_now.replace(second=0, microsecond=0) - timedelta(minutes=WINDOW_MINUTES - 1)
        finished, truncated = await _recent_finishes(conn, merchant_id, start)
        lag = await _start_lag(conn, merchant_id)
        waiting = await unserved(conn, merchant_id)
    per_minute = _per_minute(finished, start)
    totals = {name: sum(m.counts[name] for m in per_minute) for name in SERIES_NAMES}
    return MerchantStats(
        unfinished=unfinished,
        due=due,
        oldest_due_age_seconds=_age(now, oldest) if due else None,
        window_totals=totals,
        per_minute=per_minute,
        start_lag=lag,
        truncated=truncated,
        now=db_now,
        unserved=waiting,
    )


async def _recent_finishes(
    conn: AsyncConnection, merchant_id: str, start: datetime
) -> tuple[list[tuple[datetime, str]], bool]:
    """``(occurred_at, series)`` of the merchant's finished attempts since ``start``, from
    its newest :data:`EVENT_SCAN_LIMIT` events; and whether that scan stopped short."""
    newest = (
        select(events.c.occurred_at, events.c.type)
        .where(events.c.merchant_id == merchant_id)
        .order_by(events.c.id.desc())
        .limit(EVENT_SCAN_LIMIT)
        .subquery()
    )
    wanted = [t.value for t in _SERIES]
    rows = (
        await conn.execute(
            select(newest.c.occurred_at, newest.c.type).where(
                newest.c.type.in_(wanted), newest.c.occurred_at >= start
            )
        )
    ).all()
    scanned, oldest = (
        await conn.execute(select(func.count(), func.min(newest.c.occurred_at)))
    ).one()
    truncated = scanned >= EVENT_SCAN_LIMIT and oldest is not None and oldest > start
    return [(at, _SERIES[EventType(kind)]) for at, kind in rows], truncated


def _per_minute(finished: Sequence[tuple[datetime, str]], start: datetime) -> list[MinuteCounts]:
    buckets = [
        MinuteCounts(start + timedelta(minutes=i), dict.fromkeys(SERIES_NAMES, 0))
        for i in range(WINDOW_MINUTES)
    ]
    for at, series in finished:
        index = int((at - start).total_seconds() // 60)
        if 0 <= index < WINDOW_MINUTES:
            buckets[index].counts[series] += 1
    return buckets


async def _start_lag(conn: AsyncConnection, merchant_id: str) -> StartLag:
    newest = (
        select(jobs.c.run_at, jobs.c.started_at)
        .where(jobs.c.merchant_id == merchant_id)
        .order_by(jobs.c.created_at.desc())
        .limit(LAG_SCAN_LIMIT)
        .subquery()
    )
    rows = (
        await conn.execute(
            select(newest.c.run_at, newest.c.started_at).where(newest.c.started_at.is_not(None))
        )
    ).all()
    lags = sorted(max(0.0, (started - due).total_seconds()) for due, started in rows)
    if not lags:
        return StartLag(0, None, None, None)
    return StartLag(len(lags), _quantile(lags, 0.5), _quantile(lags, 0.95), lags[-1])


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an ascending, non-empty sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
