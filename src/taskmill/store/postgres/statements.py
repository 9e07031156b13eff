"""PostgreSQL's fast paths: the hot transitions, each one statement in autocommit.

A producer's insert, the populator's round, a claim and a batch of successes lie on every
job's way through the system. Each is one statement here (data-modifying CTEs: the rows,
their events, the runs and the wake-up together), run on asyncpg itself (``direct.py``):
one round trip instead of five to seven. Each writes what the shared function of the same
transition writes (``jobs.insert_made``, ``claims.enqueue_due_and_next``, ``claims.claim``,
``outcomes.succeed_many``), fenced alike; the conformance suite runs both on PostgreSQL.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Float,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    func,
    insert,
    literal,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobStatus, RunOutcome, check_transition
from taskmill.store import events as event_log
from taskmill.store.claims import CLAIM_ORDER, ClaimParams, waiting
from taskmill.store.jobs import MadeJob, wake
from taskmill.store.notify import FINISHED, QUEUED
from taskmill.store.outcomes import Success
from taskmill.store.postgres import direct
from taskmill.store.postgres.database import PostgresDatabase as Database
from taskmill.store.records import to_job, to_job_dict
from taskmill.store.schema import events, job_runs, jobs
from taskmill.store.transition import NOT_REPLAYED
from taskmill.store.types import UtcDateTime


async def insert_jobs(db: Database, made: Sequence[MadeJob]) -> None:
    """Insert ``made`` (from ``jobs.make_job``), their events and the wake-ups as one
    PostgreSQL statement in autocommit: one round trip instead of five per job
    (``BEGIN``, two inserts, the notification, ``COMMIT``) — the cost of ``schedule()``.
    More than ``FEW`` jobs are bound column by column as arrays (unnested in SQL), their
    events built in SQL from the same arrays: one prepared statement for any count, and
    no per-job JSON of the whole row in Python (``schedule_many``'s cost). All or
    nothing."""
    if not made:
        return
    if len(made) <= FEW:
        await _insert_few(db, made)
        return
    rows = [m.row for m in made]
    values: dict[str, Any] = {name: [row[name] for row in rows] for name, _ in _NEW_JOB}
    # As text, cast in SQL, as the successes' results (a JSONB array needs a codec).
    values["payload"] = [json.dumps(row["payload"], allow_nan=False) for row in rows]
    values["status"] = [row["status"].value for row in rows]
    values["schedule_type"] = [row["schedule_type"].value for row in rows]
    values["actor"] = [m.events[0].actor for m in made]
    channels = tuple(sorted({wake(row) for row in rows}))
    await direct.fetch(db, _insert_jobs_statement(channels), values)


# Up to this many jobs (a producer calling schedule() alone, a few at once) are bound row
# by row, their events built in Python: cheaper to bind and run than the arrays' statement
# for one job (0.84-1.13 ms a call against 1.16-1.25 ms), three times dearer for 16
# (11.3 against 3.6-4.0 ms), even at 4 (bench/README.md, "Many producers again").
FEW = 4


async def _insert_few(db: Database, made: Sequence[MadeJob]) -> None:
    job_rows = [m.row for m in made]
    event_rows = [event_log.row(e) for m in made for e in m.events]
    stmt = _few_statement(
        tuple(job_rows[0]),
        tuple(event_rows[0]),
        len(job_rows),
        len(event_rows),
        tuple(sorted({wake(row) for row in job_rows})),
    )
    params: dict[str, Any] = {}
    for i, row in enumerate(job_rows):
        params.update({f"job{i}_{k}": v for k, v in row.items()})
    for i, event in enumerate(event_rows):
        params.update({f"event{i}_{k}": v for k, v in event.items()})
    await direct.fetch(db, stmt, params)


@functools.lru_cache(maxsize=64)
def _few_statement(
    job_keys: tuple[str, ...],
    event_keys: tuple[str, ...],
    n_jobs: int,
    n_events: int,
    channels: tuple[str, ...],
) -> Select[Any]:
    """The statement of :func:`_insert_few`, built once per shape with bound parameters."""
    # INSERT ... SELECT ... UNION ALL ... rather than a multi-row VALUES, which SQLAlchemy
    # does not cache (it would compile the statement on every call); the rows, and so
    # the event ids, come in this order.
    job = _insert_rows(jobs, "job", job_keys, n_jobs)
    event = _insert_rows(events, "event", event_keys, n_events)
    wake_up = select(*(func.pg_notify(channel, "") for channel in channels))
    return wake_up.add_cte(job.cte("new_jobs"), event.cte("new_events"))


def _insert_rows(table: Table, prefix: str, keys: tuple[str, ...], n: int) -> Insert:
    rows = [
        select(*(bindparam(f"{prefix}{i}_{k}", type_=table.c[k].type).label(k) for k in keys))
        for i in range(n)
    ]
    return insert(table).from_select(list(keys), union_all(*rows) if n > 1 else rows[0])


# A new job's columns bound as arrays (text for the enums and the payload, cast in SQL);
# the other columns of ``jobs.job_row`` start empty: attempt 0, the rest NULL.
_NEW_JOB: tuple[tuple[str, Any], ...] = (
    ("id", String),
    ("merchant_id", String),
    ("template_id", String),
    ("task_type", String),
    ("queue", String),
    ("priority", Integer),
    ("payload", Text),
    ("status", String),
    ("schedule_type", String),
    ("run_at", UtcDateTime()),
    ("scheduled_for", UtcDateTime()),
    ("max_attempts", Integer),
    ("timeout_seconds", Float),
    ("idempotency_key", String),
    ("queued_at", UtcDateTime()),
    ("created_at", UtcDateTime()),
    ("trace_context", String),
    ("on_dependency_failure", String),
    ("unique_key", String),
)
_EMPTY: Mapping[str, Any] = {
    "attempt": 0,
    "worker_id": None,
    "lease_expires_at": None,
    "started_at": None,
    "finished_at": None,
    "result": None,
    "last_error": None,
    "cancel_reason": None,
}


@functools.lru_cache(maxsize=4)
def _insert_jobs_statement(channels: tuple[str, ...]) -> Select[Any]:
    """The statement of :func:`insert_jobs`, built once per set of wake-up channels.

    It writes what ``jobs.insert_made`` writes: the rows; per job, in the batch's order,
    ``job.created`` (the whole replayable row, as ``jobs.created_event`` builds it: a
    job created queued shows ``scheduled`` there) and, for a job created queued,
    ``job.queued``; and the wake-ups."""
    scheduled, queued = JobStatus.SCHEDULED.value, JobStatus.QUEUED.value
    bound = [(name, type_) for name, type_ in _NEW_JOB] + [("actor", String)]
    unnested = (
        func.unnest(*(bindparam(name, type_=ARRAY(type_)) for name, type_ in bound))
        .table_valued(*(column(name, type_) for name, type_ in bound), with_ordinality="n")
        .render_derived(name="unnested")
    )
    b = select(unnested).cte("batch").c  # unnested once, read by both inserts

    names = [c.name for c in jobs.c]
    new_jobs = insert(jobs).from_select(
        names, select(*(_stored(b, n).label(n) for n in names)).order_by(b.n)
    )

    replayed = [n for n in names if n not in NOT_REPLAYED]
    created_data = func.jsonb_build_object(
        "to", scheduled,
        "changes", func.jsonb_build_object(
            *(p for n in replayed for p in (literal(n, String), _as_created(b, n)))
        ),
    )  # fmt: skip
    queued_data = func.jsonb_build_object(
        "from", scheduled,
        "to", queued,
        "changes", func.jsonb_build_object(
            "status", queued, "queued_at", event_log.iso_text(b.queued_at)
        ),
    )  # fmt: skip
    created = select(
        b.created_at.label("occurred_at"),
        b.merchant_id,
        literal(EventType.JOB_CREATED.value, String).label("type"),
        b.actor,
        b.id.label("job_id"),
        b.template_id,
        created_data.label("data"),
        b.n,
        literal(0).label("k"),
    )
    queueing = select(
        b.queued_at,
        b.merchant_id,
        literal(EventType.JOB_QUEUED.value, String),
        b.actor,
        b.id,
        type_coerce(null(), String),
        queued_data,
        b.n,
        literal(1),
    ).where(b.status == queued)
    both = union_all(created, queueing).subquery("both")
    columns = ["occurred_at", "merchant_id", "type", "actor", "job_id", "template_id", "data"]
    new_events = insert(events).from_select(
        columns, select(*(both.c[c] for c in columns)).order_by(both.c.n, both.c.k)
    )
    wake_up = select(*(func.pg_notify(channel, "") for channel in channels))
    return wake_up.add_cte(new_jobs.cte("new_jobs"), new_events.cte("new_events"))


def _stored(b: Any, name: str) -> Any:
    """What :func:`_insert_jobs_statement` stores in column ``name`` from the batch ``b``."""
    if name in _EMPTY:
        return type_coerce(literal(_EMPTY[name]), jobs.c[name].type)
    if name == "updated_at":
        return b.created_at
    if name in ("payload", "status", "schedule_type"):
        return cast(b[name], jobs.c[name].type)
    return b[name]


def _as_created(b: Any, name: str) -> Any:
    """Column ``name`` in a ``job.created`` event, as ``events.jsonable`` writes it:
    timestamps as ISO text, and the job as created (``scheduled``, not yet queued)."""
    if name == "status":
        return literal(JobStatus.SCHEDULED.value)
    if name == "queued_at" or (name in _EMPTY and _EMPTY[name] is None):
        return null()
    if name == "payload":
        return cast(b.payload, JSONB)
    if name in _EMPTY:
        return literal(_EMPTY[name])
    if isinstance(jobs.c[name].type, UtcDateTime):
        return event_log.iso_text(b[name])
    return b[name]


async def enqueue_due_and_next(
    db: Database, *, now: datetime, limit: int, actor: str
) -> tuple[list[Job], datetime | None]:
    """``claims.enqueue_due_and_next`` as one statement in autocommit, as the
    claim is: lock, update, the ``job.queued`` events, the workers' wake-up and the next
    due time, one round trip instead of seven on every delayed job's way."""
    check_transition(JobStatus.SCHEDULED, JobStatus.QUEUED)
    values = {"now": now, "limit": limit, "actor": actor}
    # Not waiting for the WAL flush, as the claim (ADR 0017): queueing lost in a server
    # crash leaves the jobs scheduled and due, and the populator queues them again (a
    # hint published meanwhile finds them not queued and is dropped).
    rows = await direct.fetch(db, _enqueue_due_statement(by_id=False), values, flush=False)
    return _queued_and_next(rows, limit)


async def enqueue_picked(
    conn: AsyncConnection, ids: Sequence[str], *, now: datetime, limit: int, actor: str
) -> tuple[list[Job], datetime | None]:
    """The same statement for due jobs the caller picked and locked (merchants in turn),
    in the caller's transaction; ``limit`` is the round's, for the next due time."""
    check_transition(JobStatus.SCHEDULED, JobStatus.QUEUED)
    values = {"now": now, "limit": len(ids), "actor": actor, "job_ids": list(ids)}
    result = await conn.execute(_enqueue_due_statement(by_id=True), values)
    return _queued_and_next([dict(row) for row in result.mappings().all()], limit)


def _queued_and_next(
    rows: Sequence[dict[str, Any]], limit: int
) -> tuple[list[Job], datetime | None]:
    later = rows[0]["next_due"] if rows and len(rows) - 1 < limit else None
    return [to_job_dict(row) for row in rows if row["id"] is not None], later


@functools.cache
def _enqueue_due_statement(*, by_id: bool) -> Select[Any]:
    """The statement of :func:`enqueue_due_and_next`, built once (its
    parameters declared with a value: see ``direct.compile_statement``). Its first row
    carries the next due time (the ids it queued excluded: every part of one statement
    reads the same snapshot, from before its own update) and no job, so that the time
    comes back even when nothing was due; the queued jobs follow, oldest first."""
    scheduled, queued = JobStatus.SCHEDULED.value, JobStatus.QUEUED.value
    now = func.statement_timestamp()
    candidates = (
        select(jobs.c.id)
        .where(*waiting(), jobs.c.run_at <= bindparam("now", None, type_=UtcDateTime()))
        .order_by(jobs.c.run_at)
        .limit(bindparam("limit", None, type_=Integer))
        .with_for_update(skip_locked=True, of=jobs)
    )
    if by_id:
        ids = bindparam("job_ids", None, type_=ARRAY(String))
        candidates = candidates.where(jobs.c.id == any_(ids))
    picked = candidates.cte("picked")
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
        .where(*waiting(), jobs.c.id.not_in(select(picked.c.id)))
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


async def claim(db: Database, params: ClaimParams) -> list[Job]:
    """``claims.claim`` (without a per-merchant cap) as one statement in autocommit:
    lock, update, the ``job.started`` events and the runs in data-modifying CTEs, one
    round trip instead of six (``BEGIN``, select, update, two inserts, ``COMMIT``) on
    every job's way to start."""
    check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    stmt = _claim_statement(by_id=params.job_ids is not None)
    values = _claim_values(params)
    # Not waiting for the WAL flush (ADR 0017): a claim lost in a server crash only
    # makes the job run again, which at-least-once allows; its outcome's commit
    # flushes the claim with it.
    rows = await direct.fetch(db, stmt, values, flush=False)
    return [to_job_dict(row) for row in rows]


async def claim_picked(conn: AsyncConnection, params: ClaimParams, ids: Sequence[str]) -> list[Job]:
    """The same statement for jobs the caller picked and locked (a per-merchant cap),
    in the caller's transaction."""
    check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    values = {**_claim_values(params), "job_ids": list(ids), "limit": len(ids)}
    result = await conn.execute(_claim_statement(by_id=True), values)
    return [to_job(row) for row in result.all()]


def _claim_values(params: ClaimParams) -> dict[str, Any]:
    return {
        "queues": list(params.queues),
        "task_types": list(params.task_types),
        "job_ids": list(params.job_ids or ()),
        "limit": params.limit,
        "worker_id": params.worker_id,
        "actor": f"worker:{params.worker_id}",
        "lease_seconds": params.lease_seconds,
    }


@functools.cache
def _claim_statement(*, by_id: bool) -> Select[Any]:
    """The statement of :func:`claim`, built once: lists are bound as
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
        .order_by(*CLAIM_ORDER)
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


async def record_successes(db: Database, successes: Sequence[Success]) -> list[bool]:
    """``outcomes.record_successes`` as one statement in autocommit (update, events and
    runs in data-modifying CTEs, one round trip instead of seven)."""
    if not successes:
        return []
    check_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    rows = await direct.fetch(db, _success_statement(), _success_values(successes))
    return _owned(successes, rows)


async def succeed_in(conn: AsyncConnection, successes: Sequence[Success]) -> list[bool]:
    """The same statement in the caller's transaction (beside the batch's failures)."""
    if not successes:
        return []
    check_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    result = await conn.execute(_success_statement(), _success_values(successes))
    return _owned(successes, result.mappings().all())


def _success_values(successes: Sequence[Success]) -> dict[str, Any]:
    return {
        "job_ids": [s.attempt.job_id for s in successes],
        "attempts": [s.attempt.attempt for s in successes],
        "worker_ids": [s.attempt.worker_id for s in successes],
        # As text, cast in SQL: a JSONB array parameter would need a codec per driver.
        "results": [json.dumps(s.result, allow_nan=False) for s in successes],
        "durations": [s.duration_seconds for s in successes],
    }


def _owned(successes: Sequence[Success], rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    done = {(row["id"], row["attempt"]) for row in rows}
    return [(s.attempt.job_id, s.attempt.attempt) in done for s in successes]


@functools.cache
def _success_statement() -> Select[Any]:
    """The statement of :func:`record_successes`, built once: the batch is
    bound as parallel arrays, unnested into rows, so every batch size shares one prepared
    statement. Writes what ``outcomes.succeed_many`` writes, guarded by the same fence."""
    running, succeeded = JobStatus.RUNNING.value, JobStatus.SUCCEEDED.value
    now = func.statement_timestamp()
    batch = (
        func.unnest(
            bindparam("job_ids", type_=ARRAY(String)),
            bindparam("attempts", type_=ARRAY(Integer)),
            bindparam("worker_ids", type_=ARRAY(String)),
            bindparam("results", type_=ARRAY(Text)),
            bindparam("durations", type_=ARRAY(Float)),
        )
        .table_valued(
            column("job_id", String),
            column("attempt", Integer),
            column("worker_id", String),
            column("result", Text),
            column("duration", Float),
            name="batch",
        )
        .render_derived()
    )
    ended = (
        update(jobs)
        .where(
            jobs.c.id == batch.c.job_id,
            jobs.c.status == running,
            jobs.c.worker_id == batch.c.worker_id,
            jobs.c.attempt == batch.c.attempt,
        )
        .values(
            status=succeeded,
            updated_at=now,
            result=cast(batch.c.result, JSONB),
            finished_at=now,
            lease_expires_at=None,
            last_error=None,
        )
        .returning(
            jobs.c.id,
            jobs.c.attempt,
            jobs.c.merchant_id,
            jobs.c.updated_at,
            jobs.c.worker_id,
            jobs.c.result,
            jobs.c.finished_at,
            batch.c.duration,
        )
        .cte("ended")
    )
    runs = (
        update(job_runs)
        .where(
            job_runs.c.job_id == ended.c.id,
            job_runs.c.attempt == ended.c.attempt,
            job_runs.c.finished_at.is_(None),
        )
        .values(
            finished_at=ended.c.finished_at,
            outcome=RunOutcome.SUCCEEDED.value,
            duration_seconds=ended.c.duration,
        )
    )
    logged = event_log.transition_events(
        ended,
        event_type=EventType.JOB_SUCCEEDED,
        actor=literal("worker:", String).concat(ended.c.worker_id),
        from_to=(running, succeeded),
        changes={
            "finished_at": event_log.iso_text(ended.c.finished_at),
            "lease_expires_at": null(),
            "last_error": null(),
            "result": ended.c.result,
        },
        order_by=(ended.c.id,),
    )
    # What transition() sends for a finished job: processes waiting on results listen.
    woken = select(func.pg_notify(FINISHED, "")).select_from(ended).limit(1).scalar_subquery()
    return select(ended.c.id, ended.c.attempt, woken.label("woken")).add_cte(
        runs.cte("runs"), logged.cte("logged")
    )
