"""Moving jobs forward: due -> queued (populator), queued -> running (worker claims),
lease renewal (heartbeats) and lease expiry (failure watcher)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Float,
    Integer,
    Row,
    Select,
    String,
    any_,
    bindparam,
    exists,
    func,
    insert,
    null,
    or_,
    select,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobStatus, RunOutcome, check_transition
from taskmill.core.templates import OverlapPolicy
from taskmill.store import direct
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.dependencies import dependencies_met
from taskmill.store.notify import QUEUED
from taskmill.store.records import to_job, to_job_dict
from taskmill.store.runs import finish_runs, start_runs
from taskmill.store.schema import job_runs, jobs, templates, workers
from taskmill.store.transition import Transition, transition
from taskmill.store.types import UtcDateTime
from taskmill.store.workers import WorkerStatus

_sibling = jobs.alias("sibling")

WORKER_LOST = "worker_lost"


def _dependencies_met() -> ColumnElement[bool]:
    """No upstream job holds this one back (its ``on_dependency_failure`` policy decides
    whether a failed or cancelled upstream does)."""
    return dependencies_met()


def _not_blocked_by_sibling() -> ColumnElement[bool]:
    """Overlap policy ``queue``: an instance waits while an earlier one of its template is
    unfinished, so instances run one at a time, in tick order."""
    ahead = (
        select(1)
        .select_from(_sibling.join(templates, templates.c.id == _sibling.c.template_id))
        .where(
            _sibling.c.template_id == jobs.c.template_id,
            templates.c.overlap_policy == OverlapPolicy.QUEUE.value,
            _sibling.c.id != jobs.c.id,
            or_(
                _sibling.c.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                (_sibling.c.status == JobStatus.SCHEDULED)
                & (_sibling.c.scheduled_for < jobs.c.scheduled_for),
            ),
        )
    )
    return or_(jobs.c.template_id.is_(None), ~exists(ahead))


async def _lock_rows(conn: AsyncConnection, db: Database, stmt: Select[Any]) -> list[Row[Any]]:
    # SKIP LOCKED lets replicas claim disjoint batches; SQLite has one writer anyway.
    if db.dialect.supports_skip_locked:
        stmt = stmt.with_for_update(skip_locked=True, of=jobs)
    return list((await conn.execute(stmt)).all())


async def _lock_ids(conn: AsyncConnection, db: Database, stmt: Select[Any]) -> list[str]:
    return [row[0] for row in await _lock_rows(conn, db, stmt)]


async def enqueue_due(db: Database, *, now: datetime, limit: int, actor: str) -> list[Job]:
    """Move up to ``limit`` due jobs (``run_at <= now``, dependencies met) to ``queued``."""
    queued, _ = await enqueue_due_and_next(db, now=now, limit=limit, actor=actor)
    return queued


def _waiting() -> tuple[ColumnElement[bool], ...]:
    """Scheduled and free to go once its ``run_at`` comes: no dependency or unfinished
    sibling holds it back (the populator and its next-due read must agree, or it spins)."""
    return (jobs.c.status == JobStatus.SCHEDULED, _dependencies_met(), _not_blocked_by_sibling())


def _due_candidates(now: datetime, limit: int, *, merchants_in_turn: bool) -> Select[Any]:
    """Due jobs in the order the populator queues them: oldest ``run_at`` first or, with
    ``merchants_in_turn``, each merchant's oldest first, then each one's second, and so on.

    Taking turns keeps a tenant that arrives behind another's large backlog from waiting
    for that whole backlog to be queued before its own jobs reach the claim (issue 6). It
    ranks every due job, so it is used only with ``max_running_per_merchant`` set.
    """
    due = (*_waiting(), jobs.c.run_at <= now)
    if not merchants_in_turn:
        return select(jobs.c.id).where(*due).order_by(jobs.c.run_at).limit(limit)
    turn = func.row_number().over(partition_by=jobs.c.merchant_id, order_by=jobs.c.run_at)
    ranked = select(jobs.c.id, jobs.c.run_at, turn.label("turn")).where(*due).subquery()
    # Ranked in a subquery (PostgreSQL refuses FOR UPDATE beside a window function), then
    # ordered, locked and limited out here, so that rows another populator holds are
    # skipped and replaced, and a row queued meanwhile is rechecked out by its status.
    return (
        select(jobs.c.id)
        .join(ranked, ranked.c.id == jobs.c.id)
        .where(jobs.c.status == JobStatus.SCHEDULED)
        .order_by(ranked.c.turn, ranked.c.run_at)
        .limit(limit)
    )


async def enqueue_due_and_next(
    db: Database, *, now: datetime, limit: int, actor: str, merchants_in_turn: bool = False
) -> tuple[list[Job], datetime | None]:
    """:func:`enqueue_due`, and the earliest ``run_at`` still scheduled afterwards, read
    in the same transaction: the populator learns when to come back without another
    round trip. ``None`` when the batch was full (come back at once) or nothing waits.
    ``merchants_in_turn``: see :func:`_due_candidates`."""
    if db.dialect.name == "postgresql" and not merchants_in_turn:
        return await _enqueue_due_in_one_statement(db, now=now, limit=limit, actor=actor)
    candidates = _due_candidates(now, limit, merchants_in_turn=merchants_in_turn)

    async def enqueue_in(conn: AsyncConnection) -> tuple[list[Job], datetime | None]:
        ids = await _lock_ids(conn, db, candidates)
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=ids,
                from_statuses=frozenset({JobStatus.SCHEDULED}),
                to_status=JobStatus.QUEUED,
                event_type=EventType.JOB_QUEUED,
                actor=actor,
                values={"queued_at": db.dialect.db_now()},
            ),
        )
        later = None if len(ids) >= limit else (await conn.execute(_NEXT_DUE)).scalar_one_or_none()
        # RETURNING gives no order: oldest first, as the one statement returns them.
        return [to_job(row) for row in sorted(rows, key=lambda r: (r.run_at, r.id))], later

    return await db.write(enqueue_in)


# ORDER BY ... LIMIT 1, not min(): with the NOT EXISTS conditions PostgreSQL computes
# min() by reading every job; this walks idx_jobs_status_run_at and stops at the first.
_NEXT_DUE = select(jobs.c.run_at).where(*_waiting()).order_by(jobs.c.run_at).limit(1)


async def _enqueue_due_in_one_statement(
    db: Database, *, now: datetime, limit: int, actor: str
) -> tuple[list[Job], datetime | None]:
    """:func:`enqueue_due_and_next` as one PostgreSQL statement in autocommit, as the
    claim is: lock, update, the ``job.queued`` events, the workers' wake-up and the next
    due time, one round trip instead of seven on every delayed job's way."""
    check_transition(JobStatus.SCHEDULED, JobStatus.QUEUED)
    values = {"now": now, "limit": limit, "actor": actor}
    rows = await direct.fetch(db, _enqueue_due_statement(), values)
    later = rows[0]["next_due"] if rows and len(rows) - 1 < limit else None
    return [to_job_dict(row) for row in rows if row["id"] is not None], later


@functools.cache
def _enqueue_due_statement() -> Select[Any]:
    """The statement of :func:`_enqueue_due_in_one_statement`, built once (its
    parameters declared with a value: see ``direct.compile_statement``). Its first row
    carries the next due time (the ids it queued excluded: every part of one statement
    reads the same snapshot, from before its own update) and no job, so that the time
    comes back even when nothing was due; the queued jobs follow, oldest first."""
    scheduled, queued = JobStatus.SCHEDULED.value, JobStatus.QUEUED.value
    now = func.statement_timestamp()
    picked = (
        select(jobs.c.id)
        .where(*_waiting(), jobs.c.run_at <= bindparam("now", None, type_=UtcDateTime()))
        .order_by(jobs.c.run_at)
        .limit(bindparam("limit", None, type_=Integer))
        .with_for_update(skip_locked=True, of=jobs)
        .cte("picked")
    )
    changed = (
        update(jobs)
        .where(jobs.c.id == picked.c.id, jobs.c.status == scheduled)
        .values(status=queued, updated_at=now, queued_at=now)
        .returning(*jobs.c)
        .cte("changed")
    )
    logged = event_log.transition_events(
        changed,
        event_type=EventType.JOB_QUEUED,
        actor=bindparam("actor", None, type_=String),
        from_to=(scheduled, queued),
        changes={"queued_at": event_log.iso_text(changed.c.queued_at)},
        order_by=(changed.c.run_at, changed.c.id),
    )
    next_due = (
        select(jobs.c.run_at)
        .where(*_waiting(), jobs.c.id.not_in(select(picked.c.id)))
        .order_by(jobs.c.run_at)
        .limit(1)
        .scalar_subquery()
    )
    # What transition() sends: workers on the database broker listen for queued jobs.
    wake_workers = select(func.pg_notify(QUEUED, "")).select_from(changed).limit(1)
    # Typed NULLs: the union's columns take the first select's types, and the rows are
    # read through those types' processors.
    first = select(
        *(type_coerce(null(), c.type).label(c.name) for c in jobs.c),
        next_due.label("next_due"),
        wake_workers.scalar_subquery().label("woken"),
    )
    rest = select(
        *changed.c, type_coerce(null(), UtcDateTime()).label("next_due"), null().label("woken")
    )
    both = union_all(first, rest).subquery("rows")
    return (
        select(*(both.c[c.name].label(c.name) for c in jobs.c), both.c.next_due, both.c.woken)
        .add_cte(logged.cte("logged"))
        .order_by(both.c.run_at.nulls_first(), both.c.id)
    )


async def next_due_at(db: Database) -> datetime | None:
    """The earliest ``run_at`` of a scheduled job, so the populator can sleep until then."""
    async with db.read() as conn:
        due: datetime | None = (await conn.execute(_NEXT_DUE)).scalar_one_or_none()
    return due


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """What a worker can take: up to ``limit`` queued jobs of ``task_types`` in ``queues``.

    ``max_running_per_merchant`` caps how many jobs of one merchant run at once (across
    all workers), so that one tenant's backlog cannot starve the others.
    """

    worker_id: str
    limit: int
    lease_seconds: float
    queues: Sequence[str]
    task_types: Sequence[str]
    job_ids: Sequence[str] | None = None
    max_running_per_merchant: int | None = None


# Highest priority first, then oldest (the id breaks ties, so the order is total).
_CLAIM_ORDER = (jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)

# A fair claim excludes each merchant that fills up and looks again; bounded so that a
# claim stays a handful of statements however many tenants there are.
_FAIR_CLAIM_ROUNDS = 4


def _candidates(params: ClaimParams, limit: int) -> Select[Any]:
    """Queued jobs ``params`` may take, highest priority first, then oldest."""
    stmt = (
        select(jobs.c.id, jobs.c.merchant_id)
        .where(
            jobs.c.status == JobStatus.QUEUED,
            jobs.c.queue.in_(list(params.queues)),
            jobs.c.task_type.in_(list(params.task_types)),
        )
        .order_by(*_CLAIM_ORDER)
        .limit(limit)
    )
    if params.job_ids is not None:
        stmt = stmt.where(jobs.c.id.in_(list(params.job_ids)))
    return stmt


async def _fair_ids(
    conn: AsyncConnection, db: Database, params: ClaimParams, cap: int
) -> list[str]:
    """Up to ``params.limit`` ids in claim order, skipping merchants with ``cap`` running.

    A soft cap: two workers claiming at the same instant may each take a merchant's last
    free place (at most one batch over the cap).
    """
    counted = await conn.execute(
        select(jobs.c.merchant_id, func.count())
        .where(jobs.c.status == JobStatus.RUNNING)
        .group_by(jobs.c.merchant_id)
    )
    running: Counter[str] = Counter()
    for merchant, n in counted.all():
        running[merchant] = n
    full = {merchant for merchant, n in running.items() if n >= cap}
    chosen: list[str] = []
    for _ in range(_FAIR_CLAIM_ROUNDS):
        want = params.limit - len(chosen)
        stmt = _candidates(params, want).where(
            jobs.c.merchant_id.not_in(full), jobs.c.id.not_in(chosen)
        )
        rows = await _lock_rows(conn, db, stmt)
        filled = False
        for row in rows:
            if running[row.merchant_id] < cap:
                chosen.append(row.id)
                running[row.merchant_id] += 1
            else:
                full.add(row.merchant_id)
                filled = True
        if len(rows) < want or not filled or len(chosen) >= params.limit:
            break
    return chosen


async def claim(db: Database, params: ClaimParams) -> list[Job]:
    """Claim queued jobs for ``params.worker_id``: ``running``, attempt + 1, a lease, a run row.

    Highest priority first, then oldest. Never blocks on rows another claimer holds.
    """
    if params.limit <= 0 or not params.task_types or not params.queues:
        return []
    cap = params.max_running_per_merchant
    if db.dialect.name == "postgresql" and cap is None:
        return await _claim_in_one_statement(db, params)
    now = db.dialect.db_now()

    async def claim_in(conn: AsyncConnection) -> list[Row[Any]]:
        if cap is None:
            ids = [row.id for row in await _lock_rows(conn, db, _candidates(params, params.limit))]
        else:
            ids = await _fair_ids(conn, db, params, cap)
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=ids,
                from_statuses=frozenset({JobStatus.QUEUED}),
                to_status=JobStatus.RUNNING,
                event_type=EventType.JOB_STARTED,
                actor=f"worker:{params.worker_id}",
                values={
                    "worker_id": params.worker_id,
                    "attempt": jobs.c.attempt + 1,
                    "lease_expires_at": db.dialect.db_now(params.lease_seconds),
                    "started_at": now,
                },
            ),
        )
        await start_runs(conn, rows)
        return rows

    rows = await db.write(claim_in)
    # RETURNING gives no order: start them in claim order, as the one statement does.
    rows.sort(key=lambda row: (-row.priority, row.run_at, row.id))
    return [to_job(row) for row in rows]


async def _claim_in_one_statement(db: Database, params: ClaimParams) -> list[Job]:
    """:func:`claim` as one PostgreSQL statement in autocommit: lock, update, the
    ``job.started`` events and the runs in data-modifying CTEs, one round trip instead of
    six (``BEGIN``, select, update, two inserts, ``COMMIT``) on every job's way to start."""
    check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    stmt = _claim_statement(by_id=params.job_ids is not None)
    values = {
        "queues": list(params.queues),
        "task_types": list(params.task_types),
        "job_ids": list(params.job_ids or ()),
        "limit": params.limit,
        "worker_id": params.worker_id,
        "actor": f"worker:{params.worker_id}",
        "lease_seconds": params.lease_seconds,
    }
    return [to_job_dict(row) for row in await direct.fetch(db, stmt, values)]


@functools.cache
def _claim_statement(*, by_id: bool) -> Select[Any]:
    """The statement of :func:`_claim_in_one_statement`, built once: lists are bound as
    arrays (``= ANY``), so one prepared statement serves every batch size."""
    queued, running = JobStatus.QUEUED.value, JobStatus.RUNNING.value
    # One instant for the whole statement (clock_timestamp() would differ per call).
    now = func.statement_timestamp()
    candidates = (
        select(jobs.c.id)
        .where(
            jobs.c.status == queued,
            jobs.c.queue == any_(bindparam("queues", type_=ARRAY(String))),
            jobs.c.task_type == any_(bindparam("task_types", type_=ARRAY(String))),
        )
        .order_by(*_CLAIM_ORDER)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True, of=jobs)
    )
    if by_id:
        candidates = candidates.where(jobs.c.id == any_(bindparam("job_ids", type_=ARRAY(String))))
    picked = candidates.cte("picked")
    lease = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease_seconds", type_=Float))
    started = (
        update(jobs)
        .where(jobs.c.id == picked.c.id, jobs.c.status == queued)
        .values(
            status=running,
            updated_at=now,
            worker_id=bindparam("worker_id", type_=String),
            attempt=jobs.c.attempt + 1,
            lease_expires_at=now + lease,
            started_at=now,
        )
        .returning(*jobs.c)
        .cte("started")
    )
    runs = insert(job_runs).from_select(
        ["job_id", "attempt", "worker_id", "started_at"],
        select(started.c.id, started.c.attempt, started.c.worker_id, started.c.started_at),
    )
    # What transition() would log: the columns it changed that replay rebuilds.
    logged = event_log.transition_events(
        started,
        event_type=EventType.JOB_STARTED,
        actor=bindparam("actor", type_=String),
        from_to=(queued, running),
        changes={
            "worker_id": started.c.worker_id,
            "attempt": started.c.attempt,
            "lease_expires_at": event_log.iso_text(started.c.lease_expires_at),
            "started_at": event_log.iso_text(started.c.started_at),
        },
        order_by=(started.c.priority.desc(), started.c.run_at, started.c.id),
    )
    return (
        select(*started.c)
        .add_cte(runs.cte("runs"), logged.cte("logged"))
        .order_by(started.c.priority.desc(), started.c.run_at, started.c.id)
    )


async def renew_leases(
    db: Database, worker_id: str, held: Sequence[tuple[str, int]], lease_seconds: float
) -> set[str]:
    """Extend the leases on ``held`` ``(job_id, attempt)``; return the ids still owned.

    A job missing from the result was cancelled or rescued: its handler must stop.
    """
    if not held:
        return set()
    stmt = (
        update(jobs)
        .where(
            tuple_(jobs.c.id, jobs.c.attempt).in_(list(held)),
            jobs.c.status == JobStatus.RUNNING,
            jobs.c.worker_id == worker_id,
        )
        .values(lease_expires_at=db.dialect.db_now(lease_seconds))
        .returning(jobs.c.id)
    )
    async with db.transaction() as conn:
        return set((await conn.execute(stmt)).scalars().all())


@dataclass(frozen=True, slots=True)
class ExpiredLeases:
    """Jobs whose worker stopped renewing: rescued for another attempt, or failed for good."""

    rescued: list[Job]
    failed: list[Job]


def _held_by_dead_worker() -> ColumnElement[bool]:
    dead = select(workers.c.id).where(workers.c.status == WorkerStatus.DEAD.value)
    return jobs.c.worker_id.in_(dead)


async def expire_leases(db: Database, *, limit: int, actor: str) -> ExpiredLeases:
    """Treat every expired lease (database clock) as a failed attempt (DESIGN.md §7a).

    A lease held by a worker the registry marked dead counts as expired already: its
    jobs are rescued as soon as the worker is known dead, not one lease later.
    """
    expired = or_(jobs.c.lease_expires_at < db.dialect.db_now(), _held_by_dead_worker())
    stmt = (
        select(jobs.c.id)
        .where(jobs.c.status == JobStatus.RUNNING, expired)
        .order_by(jobs.c.lease_expires_at)
        .limit(limit)
    )
    running = frozenset({JobStatus.RUNNING})
    cleared = {"worker_id": None, "lease_expires_at": None}
    async with db.transaction() as conn:
        ids = await _lock_ids(conn, db, stmt)
        rescued = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=ids,
                from_statuses=running,
                to_status=JobStatus.SCHEDULED,
                event_type=EventType.JOB_LEASE_EXPIRED,
                actor=actor,
                values={**cleared, "run_at": db.dialect.db_now(), "last_error": WORKER_LOST},
                guards=[expired, jobs.c.attempt < jobs.c.max_attempts],
                data={"reason": WORKER_LOST},
            ),
        )
        failed = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=ids,
                from_statuses=running,
                to_status=JobStatus.FAILED,
                event_type=EventType.JOB_FAILED,
                actor=actor,
                values={**cleared, "finished_at": db.dialect.db_now(), "last_error": WORKER_LOST},
                guards=[expired, jobs.c.attempt >= jobs.c.max_attempts],
                data={"reason": WORKER_LOST},
            ),
        )
        lost = [(row.id, row.attempt) for row in (*rescued, *failed)]
        await finish_runs(conn, db.dialect, lost, RunOutcome.LOST, WORKER_LOST)
    return ExpiredLeases([to_job(r) for r in rescued], [to_job(r) for r in failed])


async def stuck_in_queue(db: Database, *, older_than_seconds: float, limit: int) -> list[Job]:
    """Jobs ``queued`` for longer than ``older_than_seconds`` (database clock): their
    broker hint was probably lost."""
    stmt = (
        select(jobs)
        .where(
            jobs.c.status == JobStatus.QUEUED,
            jobs.c.queued_at < db.dialect.db_now(-older_than_seconds),
        )
        .order_by(jobs.c.queued_at)
        .limit(limit)
    )
    async with db.read() as conn:
        return [to_job(row) for row in (await conn.execute(stmt)).all()]
