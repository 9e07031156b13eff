"""Rebuild the ``jobs`` projection from the event log, and diff it with the table (seed 003).

The comparison runs in batches of job ids, keyset over ``jobs.id`` and the event log's
``job_id`` together, so memory stays bounded however many jobs the database holds: each
batch reads at most ``batch_size`` job rows and the events of at most ``batch_size`` job
ids (a job's own events are few: one per transition), folds those events into rows and
compares them. A batch's two reads share one snapshot, so jobs moving on while the
check runs do not show up as differences.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.store.database import Database
from taskmill.store.events import jsonable
from taskmill.store.schema import events, jobs
from taskmill.store.transition import NOT_REPLAYED

ProjectedJob = dict[str, Any]

# Columns added after ``job.created`` events were first written, with the value the
# migration gave existing rows: an older event replays to what the table holds.
_ADDED_LATER: ProjectedJob = {"on_dependency_failure": "cancel", "unique_key": None}

BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class IdRange:
    """Job ids ``after < id <= upto`` (``None``: unbounded on that side)."""

    after: str | None = None
    upto: str | None = None

    def holds(self, column: ColumnElement[Any]) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.after is not None:
            where.append(column > self.after)
        if self.upto is not None:
            where.append(column <= self.upto)
        return where


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    """One batch's outcome: how many job ids it compared, and their differences."""

    checked: int
    diffs: list[str]


async def replay_jobs(conn: AsyncConnection, ids: IdRange = IdRange()) -> dict[str, ProjectedJob]:
    """Fold the ``job.*`` events of the jobs in ``ids``, in log order, into the rows they
    describe."""
    projection: dict[str, ProjectedJob] = {}
    stmt = (
        select(events.c.job_id, events.c.type, events.c.data)
        .where(events.c.job_id.is_not(None), *ids.holds(events.c.job_id))
        .order_by(events.c.id)
    )
    result = await conn.stream(stmt)
    async for job_id, event_type, data in result:
        changes = data.get("changes", {})
        if event_type == "job.created":
            projection[job_id] = {**_ADDED_LATER, **changes}
        else:
            projection.setdefault(job_id, {}).update(changes)
    return {job_id: _comparable(state) for job_id, state in projection.items()}


async def table_jobs(conn: AsyncConnection, ids: IdRange = IdRange()) -> dict[str, ProjectedJob]:
    """The ``jobs`` rows in ``ids``, in the same shape as :func:`replay_jobs`."""
    rows = (await conn.execute(select(jobs).where(*ids.holds(jobs.c.id)))).all()
    return {row.id: _comparable(dict(row._mapping)) for row in rows}


def compare(replayed: dict[str, ProjectedJob], table: dict[str, ProjectedJob]) -> list[str]:
    """Every difference between replayed rows and table rows, by job id then column:
    ``ID: only in table|events`` or ``ID.COLUMN: events=… table=…``."""
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


async def count_jobs(db: Database) -> int:
    """How many rows ``jobs`` holds (a progress bar's total; the check may see a few more)."""
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs))).scalar_one())


async def verify_batches(
    db: Database, batch_size: int = BATCH_SIZE
) -> AsyncIterator[VerifiedBatch]:
    """Compare the replayed log with the table, one batch of job ids at a time, in id
    order. Each batch ends at the smaller of the ``batch_size``-th next id in ``jobs``
    and the ``batch_size``-th next job id in the log (the last batch: unbounded), so
    neither side brings more than ``batch_size`` jobs into memory."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    after: str | None = None
    while True:
        async with db.read(snapshot=True) as conn:
            upto = await _batch_end(conn, after, batch_size)
            ids = IdRange(after, upto)
            replayed, table = await replay_jobs(conn, ids), await table_jobs(conn, ids)
        yield VerifiedBatch(len(replayed.keys() | table.keys()), compare(replayed, table))
        if upto is None:
            return
        after = upto


async def projection_diff(db: Database) -> list[str]:
    """Every difference between the replayed log and the table; empty means they agree."""
    return [diff async for batch in verify_batches(db) for diff in batch.diffs]


async def _batch_end(conn: AsyncConnection, after: str | None, size: int) -> str | None:
    """The last id of the next batch after ``after``; ``None``: the rest fits in one."""
    start = IdRange(after)
    in_table = select(jobs.c.id).where(*start.holds(jobs.c.id)).order_by(jobs.c.id)
    in_log = (
        select(events.c.job_id)
        .where(events.c.job_id.is_not(None), *start.holds(events.c.job_id))
        .group_by(events.c.job_id)
        .order_by(events.c.job_id)
    )
    # The smaller end chosen by the database: ids compare under its collation, which
    # is what the batches' ``<=`` and ``>`` use.
    ends = [stmt.offset(size - 1).limit(1).subquery() for stmt in (in_table, in_log)]
    both = union_all(*(select(end.c[0].label("id")) for end in ends)).subquery()
    end: str | None = (await conn.execute(select(func.min(both.c.id)))).scalar_one()
    return end


def _comparable(state: ProjectedJob) -> ProjectedJob:
    return {k: jsonable(v) for k, v in state.items() if k not in NOT_REPLAYED}
