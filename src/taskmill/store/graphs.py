"""Jobs created together with dependencies among them (chains and groups,
``docs/howto/chains-and-rate-limits.md``), and the results a job's upstream
jobs left it.

A graph is inserted in one write transaction: every row, every dependency, every event,
all or nothing. Its edges point from a later job of the list to an earlier one, so the
graph is acyclic as every other (``core/dependencies.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.canvas import UpstreamResult
from taskmill.core.dependencies import parse_policy
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import Job, JobStatus
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.dependencies import check_upstream
from taskmill.store.jobs import NewJob, new_job, wake
from taskmill.store.notify import notify
from taskmill.store.records import to_job_dict
from taskmill.store.schema import job_dependencies, jobs

MAX_UPSTREAM_RESULTS = 1_000
"""The most upstream results one read returns (a job may depend on a whole group)."""


async def create_graph(
    db: Database,
    news: Sequence[NewJob],
    links: Sequence[Sequence[int]],
    *,
    actor: str,
    now: datetime,
    queue_if_due: bool,
) -> list[Job]:
    """Insert ``news`` where ``news[i]`` also depends on ``news[j]`` for each ``j`` in
    ``links[i]`` (every ``j < i``), besides its own ``depends_on`` (existing jobs, checked
    as :func:`check_upstream` checks them). One transaction; the jobs in list order."""
    if len(links) != len(news):
        raise ValueError("one list of links per job")  # a programming error
    for i, ups in enumerate(links):
        if any(not 0 <= j < i for j in ups):
            raise ValueError(f"job {i} links to a job not before it")

    async def create_in(conn: AsyncConnection) -> list[Job]:
        rows: list[dict[str, Any]] = []
        edges: list[dict[str, str]] = []
        new_events: list[event_log.NewEvent] = []
        for i, new in enumerate(news):
            policy = parse_policy(new.on_dependency_failure)
            try:
                external = await check_upstream(
                    conn, db.dialect, new.merchant_id, new.depends_on, policy
                )
            except ValidationError as exc:  # which job of the graph, as the service says
                raise ValidationError(f"jobs[{i}].{exc.field}", exc.reason) from None
            internal = list(dict.fromkeys(rows[j]["id"] for j in links[i]))
            # Only a job waiting for nothing may start queued (store.jobs.starts_queued).
            waits = replace(new, depends_on=(*external, *internal))
            # A microsecond apart, so that creation order (the order upstream results
            # are read in) is the order given.
            row, made_events = new_job(waits, now + timedelta(microseconds=i), actor, queue_if_due)
            rows.append(row)
            new_events += made_events
            edges += [
                {"job_id": row["id"], "depends_on_job_id": up} for up in (*external, *internal)
            ]
        await conn.execute(insert(jobs), rows)
        if edges:
            await conn.execute(insert(job_dependencies), edges)
        await event_log.append(conn, new_events)
        for channel in sorted({wake(row) for row in rows}):
            await notify(conn, db.dialect, channel)
        return [to_job_dict(row) for row in rows]

    return await db.write(create_in)


async def upstream_results(db: Database, job_id: str) -> list[UpstreamResult]:
    """The jobs ``job_id`` depends on, oldest first (a chain's previous step, a group's
    members in the order given), with their results: one read, at most
    :data:`MAX_UPSTREAM_RESULTS`."""
    up = jobs.alias("up")
    stmt = (
        select(up.c.id, up.c.task_type, up.c.status, up.c.result)
        .select_from(job_dependencies.join(up, up.c.id == job_dependencies.c.depends_on_job_id))
        .where(job_dependencies.c.job_id == job_id)
        .order_by(up.c.created_at, up.c.id)
        .limit(MAX_UPSTREAM_RESULTS)
    )
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [UpstreamResult(r.id, r.task_type, JobStatus(r.status), r.result) for r in rows]
