"""Moving jobs forward: due -> queued (populator), queued -> running (worker claims),
lease renewal (heartbeats) and lease expiry (failure watcher)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobStatus, RunOutcome
from taskmill.core.templates import OverlapPolicy
from taskmill.store.database import Database
from taskmill.store.dependencies import dependencies_met
from taskmill.store.records import to_job
from taskmill.store.runs import finish_runs, start_runs
from taskmill.store.schema import jobs, queue_pauses, rate_limits, templates, workers
from taskmill.store.transition import Transition, transition
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


def waiting() -> tuple[ColumnElement[bool], ...]:
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
    due = (*waiting(), jobs.c.run_at <= now)
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

    async def enqueue_in(conn: AsyncConnection) -> tuple[list[Job], datetime | None]:
        ids = await pick_due(conn, db, now, limit, merchants_in_turn=merchants_in_turn)
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


async def pick_due(
    conn: AsyncConnection, db: Database, now: datetime, limit: int, *, merchants_in_turn: bool
) -> list[str]:
    """Lock up to ``limit`` due jobs in the caller's transaction (see :func:`_due_candidates`)."""
    return await _lock_ids(
        conn, db, _due_candidates(now, limit, merchants_in_turn=merchants_in_turn)
    )


# ORDER BY ... LIMIT 1, not min(): with the NOT EXISTS conditions PostgreSQL computes
# min() by reading every job; this walks idx_jobs_status_run_at and stops at the first.
_NEXT_DUE = select(jobs.c.run_at).where(*waiting()).order_by(jobs.c.run_at).limit(1)


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


def nothing_to_claim(params: ClaimParams) -> bool:
    """A worker with no free slot, no task type or no queue claims nothing."""
    return params.limit <= 0 or not params.task_types or not params.queues


# Highest priority first, then oldest (the id breaks ties, so the order is total).
CLAIM_ORDER = (jobs.c.priority.desc(), jobs.c.run_at, jobs.c.id)

# A fair claim excludes each merchant that fills up and looks again; bounded so that a
# claim stays a handful of statements however many tenants there are.
_FAIR_CLAIM_ROUNDS = 4


def _candidates(params: ClaimParams, limit: int) -> Select[Any]:
    """Queued jobs ``params`` may take, highest priority first, then oldest."""
    stmt = (
        select(jobs.c.id, jobs.c.merchant_id, jobs.c.priority, jobs.c.run_at)
        .where(
            jobs.c.status == JobStatus.QUEUED,
            jobs.c.queue.in_(list(params.queues)),
            jobs.c.task_type.in_(list(params.task_types)),
        )
        .order_by(*CLAIM_ORDER)
        .limit(limit)
    )
    if params.job_ids is not None:
        stmt = stmt.where(jobs.c.id.in_(list(params.job_ids)))
    return stmt


async def pick_fair(
    conn: AsyncConnection, db: Database, params: ClaimParams, cap: int
) -> list[str]:
    """Up to ``params.limit`` ids in claim order, skipping merchants with ``cap`` running.

    A soft cap: two workers claiming at the same instant may each take a merchant's last
    free place (at most one batch over the cap).
    """
    running = await _running_per_merchant(conn)
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
    if nothing_to_claim(params):
        return []
    cap = params.max_running_per_merchant

    async def claim_in(conn: AsyncConnection) -> list[Row[Any]]:
        if cap is None:
            ids = [row.id for row in await _lock_rows(conn, db, _candidates(params, params.limit))]
        else:
            ids = await pick_fair(conn, db, params, cap)
        return await start_picked(conn, db, params, ids)

    return in_claim_order(await db.write(claim_in))


async def start_picked(
    conn: AsyncConnection, db: Database, params: ClaimParams, ids: Sequence[str]
) -> list[Row[Any]]:
    """``queued -> running`` for the ``ids`` the caller picked and locked: attempt + 1, a
    lease, a run row, in the caller's transaction."""
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
                "started_at": db.dialect.db_now(),
            },
        ),
    )
    await start_runs(conn, rows)
    return rows


def in_claim_order(rows: list[Row[Any]]) -> list[Job]:
    # RETURNING gives no order: start them in claim order, as the one statement does.
    rows.sort(key=lambda row: (-row.priority, row.run_at, row.id))
    return [to_job(row) for row in rows]


async def pick_rate_limited(
    conn: AsyncConnection, db: Database, params: ClaimParams, allowance: dict[str, int]
) -> list[str]:
    """Up to ``params.limit`` ids in claim order, at most ``allowance[t]`` of each
    rate-limited task type ``t`` (the others unbounded), skipping merchants at
    ``params.max_running_per_merchant`` if set. One candidate read per limited type: each
    stops at its allowance through the claim index, however long the backlog."""
    free = [t for t in params.task_types if t not in allowance]
    rows: list[Row[Any]] = []
    if free:
        stmt = _candidates(replace(params, task_types=free), params.limit)
        rows += await _lock_rows(conn, db, stmt)
    for task_type, n in sorted(allowance.items()):
        if n > 0 and task_type in params.task_types:
            stmt = _candidates(replace(params, task_types=[task_type]), min(n, params.limit))
            rows += await _lock_rows(conn, db, stmt)
    rows.sort(key=lambda row: (-row.priority, row.run_at, row.id))
    cap = params.max_running_per_merchant
    if cap is None:
        return [row.id for row in rows[: params.limit]]
    running = await _running_per_merchant(conn)
    chosen: list[str] = []
    for row in rows:
        if len(chosen) < params.limit and running[row.merchant_id] < cap:
            chosen.append(row.id)
            running[row.merchant_id] += 1
    return chosen


async def _running_per_merchant(conn: AsyncConnection) -> Counter[str]:
    counted = await conn.execute(
        select(jobs.c.merchant_id, func.count())
        .where(jobs.c.status == JobStatus.RUNNING)
        .group_by(jobs.c.merchant_id)
    )
    running: Counter[str] = Counter()
    for merchant, n in counted.all():
        running[merchant] = n
    return running


async def renew_leases(
    db: Database, worker_id: str, held: Sequence[tuple[str, int]], lease_seconds: float
) -> set[str]:
    """Extend the leases on ``held`` ``(job_id, attempt)``; return the ids still owned.

    A job missing from the result was cancelled or rescued: its handler must stop.
    """
    if not held:
        return set()
    # The renewal never waits for a row lock, so it is never part of a deadlock: a row
    # another transaction holds (this worker's outcome batch, a cancel) is skipped, its
    # lease left as it is for this round, and still reported owned if it was running
    # for this worker in the statement's snapshot (the next heartbeat looks again). An
    # UPDATE that waited instead deadlocked with outcome batches locking the same rows
    # in another order (seen in a soak: "deadlock detected").
    owned = (
        tuple_(jobs.c.id, jobs.c.attempt).in_(list(held)),
        jobs.c.status == JobStatus.RUNNING,
        jobs.c.worker_id == worker_id,
    )
    lease = db.dialect.db_now(lease_seconds)
    if not db.dialect.supports_skip_locked:  # SQLite: one writer, nothing to wait for
        plain = update(jobs).where(*owned).values(lease_expires_at=lease).returning(jobs.c.id)
        async with db.transaction() as conn:
            return set((await conn.execute(plain)).scalars().all())
    mine = select(jobs.c.id).where(*owned).cte("mine")
    free = (
        select(jobs.c.id).where(jobs.c.id.in_(select(mine.c.id))).with_for_update(skip_locked=True)
    )
    renewed = (
        update(jobs)
        .where(jobs.c.id.in_(free.scalar_subquery()))
        .values(lease_expires_at=lease)
        .cte("renewed")
    )
    stmt = select(mine.c.id).add_cte(renewed)
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
    # Back to scheduled, the job belongs to no worker; failed for good, it keeps the
    # worker that lost it, as every other final status keeps the worker that ran it.
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
                values={
                    "lease_expires_at": None,
                    "finished_at": db.dialect.db_now(),
                    "last_error": WORKER_LOST,
                },
                guards=[expired, jobs.c.attempt >= jobs.c.max_attempts],
                data={"reason": WORKER_LOST},
            ),
        )
        lost = [(row.id, row.attempt) for row in (*rescued, *failed)]
        await finish_runs(conn, db.dialect, lost, RunOutcome.LOST, WORKER_LOST)
    return ExpiredLeases([to_job(r) for r in rescued], [to_job(r) for r in failed])


async def stuck_in_queue(db: Database, *, older_than_seconds: float, limit: int) -> list[Job]:
    """Jobs ``queued`` for longer than ``older_than_seconds`` (database clock), in queues
    not paused and of task types without a rate limit: their broker hint was probably
    lost."""
    stmt = (
        select(jobs)
        .where(
            jobs.c.status == JobStatus.QUEUED,
            jobs.c.queued_at < db.dialect.db_now(-older_than_seconds),
            # A paused queue's hints wait in the broker: announcing its jobs again at
            # every round would pile up copies until it is resumed.
            jobs.c.queue.not_in(select(queue_pauses.c.name)),
            # Jobs a rate limit holds back wait queued on purpose; the workers serving
            # them come back when the bucket refills (ADR 0014), hints or not.
            jobs.c.task_type.not_in(select(rate_limits.c.task_type)),
        )
        .order_by(jobs.c.queued_at)
        .limit(limit)
    )
    async with db.read() as conn:
        return [to_job(row) for row in (await conn.execute(stmt)).all()]
