"""Rebuild the ``jobs`` projection from the event log, and diff it with the table (seed 003)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from taskmill.store.database import Database
from taskmill.store.events import jsonable
from taskmill.store.schema import events, jobs
from taskmill.store.transition import NOT_REPLAYED

ProjectedJob = dict[str, Any]

# Columns added after ``job.created`` events were first written, with the value the
# migration gave existing rows: an older event replays to what the table holds.
_ADDED_LATER: ProjectedJob = {"on_dependency_failure": "cancel"}


async def replay_jobs(db: Database) -> dict[str, ProjectedJob]:
    """Fold every ``job.*`` event, in log order, into the job rows they describe."""
    projection: dict[str, ProjectedJob] = {}
    stmt = (
        select(events.c.job_id, events.c.type, events.c.data)
        .where(events.c.job_id.is_not(None))
        .order_by(events.c.id)
    )
    async with db.read() as conn:
        result = await conn.stream(stmt)
        async for job_id, event_type, data in result:
            changes = data.get("changes", {})
            if event_type == "job.created":
                projection[job_id] = {**_ADDED_LATER, **changes}
            else:
                projection.setdefault(job_id, {}).update(changes)
    return {job_id: _comparable(state) for job_id, state in projection.items()}


async def table_jobs(db: Database) -> dict[str, ProjectedJob]:
    """The ``jobs`` table in the same shape as :func:`replay_jobs`."""
    async with db.read() as conn:
        rows = (await conn.execute(select(jobs))).all()
    return {row.id: _comparable(dict(row._mapping)) for row in rows}


async def projection_diff(db: Database) -> list[str]:
    """Every difference between the replayed log and the table; empty means they agree."""
    replayed, table = await replay_jobs(db), await table_jobs(db)
    diffs: list[str] = []
    for job_id in sorted(replayed.keys() | table.keys()):
        want, have = replayed.get(job_id), table.get(job_id)
        if want is None or have is None:
            diffs.append(f"{job_id}: only in {'table' if want is None else 'events'}")
            continue
        for column in sorted(want.keys() | have.keys()):
            expected, actual = want.get(column), have.get(column)
            if expected != actual:
                diffs.append(f"{job_id}.{column}: events={expected!r} table={actual!r}")
    return diffs


def _comparable(state: ProjectedJob) -> ProjectedJob:
    return {k: jsonable(v) for k, v in state.items() if k not in NOT_REPLAYED}
