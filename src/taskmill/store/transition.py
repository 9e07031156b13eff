"""``transition()``: the writer of a job's status, and of the event that records it.

The PostgreSQL driver writes the hot transitions as one statement each instead
(``store/postgres/statements.py``); those check the same transition table and log the
same event data (``events.transition_events``), and the conformance suite runs both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.dependencies import CASCADE_ACTOR, cascade_reason
from taskmill.core.events import EventType
from taskmill.core.jobs import (
    TERMINAL_STATUSES,
    DependencyFailurePolicy,
    JobStatus,
    check_transition,
)
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store import events as event_log
from taskmill.store.dependencies import FAILURE_STATUSES, waiting_dependents
from taskmill.store.dialect import Dialect
from taskmill.store.notify import DUE, FINISHED, QUEUED, notify
from taskmill.store.schema import jobs

# Who to wake in other processes when jobs enter a status (PostgreSQL only).
_WAKES = {JobStatus.SCHEDULED: DUE, JobStatus.QUEUED: QUEUED}

# Renewed by every heartbeat without an event; not part of the replayed projection.
NOT_REPLAYED = frozenset({"updated_at", "lease_expires_at"})


@dataclass(frozen=True, slots=True)
class Transition:
    """A guarded status change applied to the jobs in ``job_ids``.

    Only rows still in one of ``from_statuses`` (and matching every ``guards`` clause,
    e.g. the claiming worker and attempt) change; the others are left alone, so a late
    or duplicate actor changes 0 rows. ``values`` may hold SQL expressions (the
    database clock, ``attempt + 1``); the event records what was actually written.
    """

    job_ids: Sequence[str]
    from_statuses: frozenset[JobStatus]
    to_status: JobStatus
    event_type: EventType
    actor: str
    values: Mapping[str, Any] = field(default_factory=dict)
    guards: Sequence[ColumnElement[bool]] = ()
    merchant_id: MerchantScope = ALL_MERCHANTS
    data: Mapping[str, Any] = field(default_factory=dict)


async def transition(conn: AsyncConnection, dialect: Dialect, t: Transition) -> list[Row[Any]]:
    """Apply ``t`` in the caller's transaction; return the changed rows (as written).

    Appends one event per changed row, in the same transaction. Blocks only on the
    database's row/write locks. Idempotent in effect: repeating it changes 0 rows.

    A job that ends ``failed`` or ``cancelled`` takes its waiting dependents with it
    (:func:`_propagate_failure`), in the same transaction, whichever path ended it.
    """
    rows = await _apply(conn, dialect, t)
    if rows and t.to_status in FAILURE_STATUSES:
        await _propagate_failure(conn, dialect, {row.id: (row.id, t.to_status) for row in rows})
    return rows


async def _propagate_failure(
    conn: AsyncConnection, dialect: Dialect, ended: dict[str, tuple[str, JobStatus]]
) -> None:
    """Cancel the ``scheduled`` dependents (policy ``cancel``) of the jobs in ``ended``,
    then theirs, level by level, each through :func:`_apply` so each gets its event.

    ``ended`` maps a job that just failed or was cancelled to the job that started the
    cascade and how it ended (for the reason). Dependents with policy ``run`` stay
    scheduled; the populator is woken, as they may now be due.
    """
    while ended:
        waiting = await waiting_dependents(conn, dialect, list(ended))
        by_upstream: dict[str, list[str]] = {}
        chosen: set[str] = set()
        may_run = False
        for w in waiting:
            if w.policy is DependencyFailurePolicy.RUN:
                may_run = True
            elif w.job_id not in chosen:  # first upstream by id names the reason
                chosen.add(w.job_id)
                by_upstream.setdefault(w.upstream_id, []).append(w.job_id)
        if may_run:
            await notify(conn, dialect, DUE)
        cancelled: dict[str, tuple[str, JobStatus]] = {}
        for upstream_id, job_ids in by_upstream.items():
            root_id, root_status = ended[upstream_id]
            reason = cascade_reason(upstream_id, root_id, root_status)
            rows = await _apply(
                conn,
                dialect,
                Transition(
                    job_ids=job_ids,
                    from_statuses=frozenset({JobStatus.SCHEDULED}),
                    to_status=JobStatus.CANCELLED,
                    event_type=EventType.JOB_CANCELLED,
                    actor=CASCADE_ACTOR,
                    values={"cancel_reason": reason, "finished_at": dialect.db_now()},
                    data={"reason": reason, "dependency_id": upstream_id, "root_job_id": root_id},
                ),
            )
            cancelled.update({row.id: (root_id, root_status) for row in rows})
        ended = cancelled


async def _apply(conn: AsyncConnection, dialect: Dialect, t: Transition) -> list[Row[Any]]:
    """:func:`transition` without failure propagation."""
    for from_status in t.from_statuses:
        check_transition(from_status, t.to_status)
    if not t.job_ids:
        return []
    status = dialect.by_key_only(jobs.c.status)
    clauses = [jobs.c.id.in_(list(t.job_ids)), status.in_(list(t.from_statuses)), *t.guards]
    if t.merchant_id is not ALL_MERCHANTS:
        clauses.append(jobs.c.merchant_id == t.merchant_id)
    old_status = await _old_statuses(conn, dialect, t, clauses)
    values = {"status": t.to_status, "updated_at": dialect.db_now(), **t.values}
    stmt = update(jobs).where(*clauses).values(values).returning(*jobs.c)
    rows = list((await conn.execute(stmt)).all())
    if rows and t.to_status in _WAKES:
        await notify(conn, dialect, _WAKES[t.to_status])
    if rows and t.to_status in TERMINAL_STATUSES:
        await notify(conn, dialect, FINISHED)
    written = [name for name in values if name not in NOT_REPLAYED or name == "lease_expires_at"]
    await event_log.append(
        conn,
        [
            event_log.NewEvent(
                type=t.event_type,
                merchant_id=row.merchant_id,
                actor=t.actor,
                occurred_at=row.updated_at,
                job_id=row.id,
                data={
                    "from": old_status.get(row.id, next(iter(t.from_statuses))),
                    "to": t.to_status,
                    "changes": {name: row._mapping[name] for name in written},
                    **t.data,
                },
            )
            for row in rows
        ],
    )
    return rows


async def _old_statuses(
    conn: AsyncConnection, dialect: Dialect, t: Transition, clauses: list[ColumnElement[bool]]
) -> dict[str, JobStatus]:
    """The status each row had before, when more than one was possible (e.g. cancel)."""
    if len(t.from_statuses) == 1:
        return {}
    stmt = select(jobs.c.id, jobs.c.status).where(*clauses)
    if dialect.supports_skip_locked:
        stmt = stmt.with_for_update()
    return {row.id: JobStatus(row.status) for row in (await conn.execute(stmt)).all()}


@dataclass(frozen=True, slots=True)
class Claimed:
    """A running job as its worker holds it: the fence a batched outcome must match."""

    job_id: str
    attempt: int
    worker_id: str


async def db_clock(conn: AsyncConnection, dialect: Dialect) -> datetime:
    """The database clock, read once (a batch of outcomes shares one timestamp)."""
    now: datetime = (await conn.execute(select(dialect.db_now()))).scalar_one()
    return now


async def transition_claimed(
    conn: AsyncConnection,
    dialect: Dialect,
    claimed: Sequence[Claimed],
    values: Sequence[Mapping[str, Any]],
    *,
    to_status: JobStatus,
    event_type: EventType,
    now: datetime,
) -> list[int]:
    """:func:`transition` for many running jobs at once, each with its own plain values
    (same keys): one locking read, one multi-row update, one multi-row event insert.

    Only jobs still ``running`` under the same worker and attempt change (the fence);
    returns the indexes in ``claimed`` that did. Call it in the caller's transaction.
    """
    check_transition(JobStatus.RUNNING, to_status)
    if not claimed:
        return []
    stmt = select(jobs.c.id, jobs.c.merchant_id, jobs.c.worker_id, jobs.c.attempt).where(
        jobs.c.id.in_([c.job_id for c in claimed]), jobs.c.status == JobStatus.RUNNING
    )
    if dialect.supports_skip_locked:
        stmt = stmt.with_for_update()
    current = {row.id: row for row in (await conn.execute(stmt)).all()}
    owned = [
        i
        for i, c in enumerate(claimed)
        if (row := current.get(c.job_id)) is not None
        and (row.worker_id, row.attempt) == (c.worker_id, c.attempt)
    ]
    if not owned:
        return []
    names = sorted(values[owned[0]])
    update_stmt = (
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"), jobs.c.status == JobStatus.RUNNING)
        .values(
            status=to_status,
            updated_at=now,
            **{name: bindparam(f"b_{name}", type_=jobs.c[name].type) for name in names},
        )
    )
    params = [{"b_id": claimed[i].job_id, **{f"b_{n}": values[i][n] for n in names}} for i in owned]
    await conn.execute(update_stmt, params)
    await event_log.append(
        conn,
        [
            event_log.NewEvent(
                type=event_type,
                merchant_id=current[claimed[i].job_id].merchant_id,
                actor=f"worker:{claimed[i].worker_id}",
                occurred_at=now,
                job_id=claimed[i].job_id,
                data={
                    "from": JobStatus.RUNNING,
                    "to": to_status,
                    "changes": {"status": to_status, **{n: values[i][n] for n in names}},
                },
            )
            for i in owned
        ],
    )
    if to_status in _WAKES:
        await notify(conn, dialect, _WAKES[to_status])
    if to_status in TERMINAL_STATUSES:
        await notify(conn, dialect, FINISHED)
    if to_status in FAILURE_STATUSES:
        ended = {claimed[i].job_id: (claimed[i].job_id, to_status) for i in owned}
        await _propagate_failure(conn, dialect, ended)
    return owned
