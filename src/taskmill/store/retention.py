"""Pruning: finished jobs past their age go with their runs, events and dependency rows,
one bounded batch per transaction; so do the events of templates deleted long enough
ago, and the rows of workers gone long enough ago (docs/adr/0009-retention.md).

Shared by both databases; each batch is a ``Database.write``, so on SQLite it runs whole
on the writer thread, queued with the other writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Select, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import UNFINISHED_STATUSES, JobStatus
from taskmill.core.retention import Cutoffs, PruneCounts
from taskmill.store.database import Database
from taskmill.store.dialect import Dialect
from taskmill.store.schema import events, job_dependencies, job_runs, jobs, templates, workers
from taskmill.store.workers import WorkerStatus

_downstream = jobs.alias("downstream")
_deleted = events.alias("deleted")


def _prunable(status: JobStatus, before: datetime) -> ColumnElement[bool]:
    """Jobs in ``status`` finished before ``before`` that no unfinished job depends on.

    ``run_at < before`` too: it lets the ``(status, run_at)`` index find them, and only
    keeps longer a job cancelled before it was due (the others ran after their
    ``run_at``, so it holds whenever ``finished_at < before`` does)."""
    waiting_on_it = (
        select(1)
        .select_from(
            job_dependencies.join(_downstream, _downstream.c.id == job_dependencies.c.job_id)
        )
        .where(
            job_dependencies.c.depends_on_job_id == jobs.c.id,
            _downstream.c.status.in_(list(UNFINISHED_STATUSES)),
        )
    )
    return (
        (jobs.c.status == status)
        & (jobs.c.run_at < before)
        & (jobs.c.finished_at < before)
        & ~exists(waiting_on_it)
    )


def _gone_workers(before: datetime) -> ColumnElement[bool]:
    """Workers stopped or marked dead whose last heartbeat is older than ``before`` (an
    alive one is first marked dead by the failure watcher; one that speaks again after
    its row went registers again: ``workers.beat`` finds no row)."""
    gone = (WorkerStatus.STOPPED.value, WorkerStatus.DEAD.value)
    return workers.c.status.in_(gone) & (workers.c.heartbeat_at < before)


def _deleted_template_events(before: datetime) -> ColumnElement[bool]:
    """A template's own events (no job) once the template is gone and its
    ``template.deleted`` event is older than ``before`` (the partial index
    ``idx_events_template_id`` holds exactly the template's own events)."""
    deleted_long_ago = select(_deleted.c.template_id).where(
        _deleted.c.job_id.is_(None),
        _deleted.c.template_id.is_not(None),
        _deleted.c.type == EventType.TEMPLATE_DELETED.value,
        _deleted.c.occurred_at < before,
    )
    still_there = select(1).where(templates.c.id == events.c.template_id)
    return (
        events.c.job_id.is_(None)
        & events.c.template_id.is_not(None)
        & events.c.template_id.in_(deleted_long_ago)
        & ~exists(still_there)
    )


async def prune_batch(db: Database, cutoffs: Cutoffs, *, limit: int) -> PruneCounts:
    """Delete one batch in one transaction: up to ``limit`` prunable jobs of the first
    status that has some, with their runs, dependency rows and events; when no job is
    left, up to ``limit`` events of deleted templates; then up to ``limit`` gone
    workers. All zero: nothing is left."""
    skip_locked = db.dialect.supports_skip_locked

    async def batch(conn: AsyncConnection) -> PruneCounts:
        for status, before in cutoffs.finished_before:
            pick = select(jobs.c.id).where(_prunable(status, before))
            pick = pick.order_by(jobs.c.run_at).limit(limit)
            if skip_locked:
                # Locked, so a job created meanwhile cannot depend on one being deleted
                # (its foreign key check waits, then fails); rows another pruner holds
                # are left to it.
                pick = pick.with_for_update(of=jobs, skip_locked=True)
            ids = list((await conn.execute(pick)).scalars())
            if ids:
                return await _delete_jobs(conn, db.dialect, ids)
        if cutoffs.templates_deleted_before is not None:
            doomed = select(events.c.id).where(
                _deleted_template_events(cutoffs.templates_deleted_before)
            )
            gone = await conn.execute(delete(events).where(events.c.id.in_(doomed.limit(limit))))
            if gone.rowcount:
                return PruneCounts(events=gone.rowcount)
        if cutoffs.workers_gone_before is None:
            return PruneCounts()
        stale = select(workers.c.id).where(_gone_workers(cutoffs.workers_gone_before))
        gone = await conn.execute(delete(workers).where(workers.c.id.in_(stale.limit(limit))))
        return PruneCounts(workers=gone.rowcount)

    return await db.write(batch)


async def _delete_jobs(conn: AsyncConnection, dialect: Dialect, ids: Sequence[str]) -> PruneCounts:
    # Children first, so every foreign key holds at each statement (and no cascade has
    # to find them): runs, dependency rows both ways, the job's events, then the jobs.
    def these(column: Column[Any]) -> ColumnElement[bool]:
        return dialect.one_of(column, ids)

    runs = await conn.execute(delete(job_runs).where(these(job_runs.c.job_id)))
    links = await conn.execute(
        delete(job_dependencies).where(
            or_(these(job_dependencies.c.job_id), these(job_dependencies.c.depends_on_job_id))
        )
    )
    logged = await conn.execute(delete(events).where(these(events.c.job_id)))
    gone = await conn.execute(delete(jobs).where(these(jobs.c.id)))
    return PruneCounts(
        jobs=gone.rowcount,
        job_runs=runs.rowcount,
        events=logged.rowcount,
        job_dependencies=links.rowcount,
    )


async def count_prunable(db: Database, cutoffs: Cutoffs) -> PruneCounts:
    """What :func:`prune_batch` would delete, all batches together, per table (a read)."""
    total = PruneCounts()
    async with db.read() as conn:
        if cutoffs.finished_before:
            doomed = select(jobs.c.id).where(
                or_(*(_prunable(status, before) for status, before in cutoffs.finished_before))
            )
            links = or_(
                job_dependencies.c.job_id.in_(doomed),
                job_dependencies.c.depends_on_job_id.in_(doomed),
            )
            total = PruneCounts(
                jobs=await _count(conn, doomed),
                job_runs=await _count(conn, select(1).where(job_runs.c.job_id.in_(doomed))),
                events=await _count(conn, select(1).where(events.c.job_id.in_(doomed))),
                job_dependencies=await _count(conn, select(1).where(links)),
            )
        if cutoffs.templates_deleted_before is not None:
            where = _deleted_template_events(cutoffs.templates_deleted_before)
            total += PruneCounts(events=await _count(conn, select(1).where(where)))
        if cutoffs.workers_gone_before is not None:
            where = _gone_workers(cutoffs.workers_gone_before)
            total += PruneCounts(workers=await _count(conn, select(1).where(where)))
    return total


async def _count(conn: AsyncConnection, rows: Select[Any]) -> int:
    return int((await conn.execute(select(func.count()).select_from(rows.subquery()))).scalar_one())
