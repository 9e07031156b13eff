"""Retention on both databases: what ``Store.prune`` deletes, what it keeps, and its
batches (docs/adr/0009-retention.md); the pruner service in a real runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import event, func, insert, select

from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus, ScheduleType
from taskmill.core.retention import Cutoffs, PruneCounts, Retention
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime
from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.schema import events, job_dependencies, job_runs, jobs, workers
from taskmill.store.templates import NewTemplate
from taskmill.store.tenants import NewApiKey
from tests.conftest import wait_for
from tests.store import finished, new_job

REAL_NOW = datetime.now(UTC)
OLD = REAL_NOW - timedelta(days=40)  # past every default age
YOUNG = REAL_NOW - timedelta(hours=1)  # within every default age
DEFAULTS = Retention(
    succeeded=timedelta(days=7),
    failed=timedelta(days=30),
    cancelled=timedelta(days=30),
    deleted_templates=timedelta(days=30),
)


async def _rows(db: Database, table: Any, column: Any, ids: set[str]) -> int:
    async with db.read() as conn:
        stmt = select(func.count()).select_from(table).where(column.in_(ids))
        return int((await conn.execute(stmt)).scalar_one())


async def _job_ids(db: Database) -> set[str]:
    async with db.read() as conn:
        return set((await conn.execute(select(jobs.c.id))).scalars())


async def _event_types(db: Database, **where: Any) -> list[str]:
    stmt = select(events.c.type).order_by(events.c.id)
    for name, value in where.items():
        stmt = stmt.where(events.c[name] == value)
    async with db.read() as conn:
        return list((await conn.execute(stmt)).scalars())


async def prune_all(store: SqlStore, cutoffs: Cutoffs, limit: int) -> list[PruneCounts]:
    """Every batch until an empty one (which is included)."""
    batches = [await store.prune(cutoffs, limit=limit)]
    while batches[-1].total:
        batches.append(await store.prune(cutoffs, limit=limit))
    return batches


async def test_retention_integration_prunes_old_finished_jobs_and_keeps_the_rest(
    store: SqlStore, db: Database
) -> None:
    old_succeeded = await finished(store, JobStatus.SUCCEEDED, OLD)
    old_failed = await finished(store, JobStatus.FAILED, OLD)
    old_cancelled = await finished(store, JobStatus.CANCELLED, OLD)
    # A chain of old finished jobs: the dependency row goes with them.
    old_downstream = await finished(store, JobStatus.SUCCEEDED, OLD, depends_on=(old_succeeded,))
    young_succeeded = await finished(store, JobStatus.SUCCEEDED, YOUNG)
    # Old enough for succeeded (7 days) but not for failed (30 days).
    ten_days = REAL_NOW - timedelta(days=10)
    failed_ten_days_ago = await finished(store, JobStatus.FAILED, ten_days)
    # An old finished job a waiting job depends on stays, with its link.
    upstream = await finished(store, JobStatus.SUCCEEDED, OLD)
    waiting = await new_job(store, depends_on=(upstream,))
    unfinished = await new_job(store)
    pruned = {old_succeeded, old_failed, old_cancelled, old_downstream}
    kept = {young_succeeded, failed_ten_days_ago, upstream, waiting, unfinished}
    cutoffs = DEFAULTS.cutoffs(REAL_NOW)
    expected = await store.count_prunable(cutoffs)
    assert await _rows(db, job_runs, job_runs.c.job_id, pruned) == 3  # cancelled never ran

    batches = await prune_all(store, cutoffs, limit=1000)

    total = sum(batches, PruneCounts())
    assert total == expected
    assert total.jobs == 4 and total.job_runs == 3 and total.job_dependencies == 1
    assert await _job_ids(db) == kept
    assert await _rows(db, job_runs, job_runs.c.job_id, pruned) == 0
    assert await _rows(db, events, events.c.job_id, pruned) == 0
    assert total.events > 0
    assert await _rows(db, events, events.c.job_id, kept) > 0
    assert await _rows(db, job_dependencies, job_dependencies.c.job_id, {waiting}) == 1
    # Nothing left: a dry run now counts nothing.
    assert await store.count_prunable(cutoffs) == PruneCounts()


async def test_retention_integration_ages_off_keep_forever(store: SqlStore, db: Database) -> None:
    old = await finished(store, JobStatus.SUCCEEDED, OLD)
    never = Retention(None, None, None, None).cutoffs(REAL_NOW)
    assert await store.count_prunable(never) == PruneCounts()
    assert await store.prune(never, limit=1000) == PruneCounts()
    assert await _job_ids(db) == {old}


async def test_retention_integration_template_events_stay_while_it_exists(
    store: SqlStore, db: Database
) -> None:
    def template(name: str) -> NewTemplate:
        return NewTemplate(name, "t", ScheduleType.INTERVAL, None, interval_seconds=60)

    kept = await store.create_template(template("kept"), actor="t", now=OLD, max_per_merchant=None)
    gone = await store.create_template(template("gone"), actor="t", now=OLD, max_per_merchant=None)
    recent = await store.create_template(
        template("recent"), actor="t", now=OLD, max_per_merchant=None
    )
    await store.delete_template(ALL_MERCHANTS, gone.id, actor="t", now=OLD)
    await store.delete_template(ALL_MERCHANTS, recent.id, actor="t", now=YOUNG)
    key = NewApiKey(DEFAULT_MERCHANT_ID, "ops", "tm_retention", "hash", [], None)
    await store.create_api_key(key, actor="t", now=OLD)
    cutoffs = DEFAULTS.cutoffs(REAL_NOW)
    assert await store.count_prunable(cutoffs) == PruneCounts(events=2)

    batches = await prune_all(store, cutoffs, limit=1000)

    assert sum(batches, PruneCounts()) == PruneCounts(events=2)
    assert await _event_types(db, template_id=gone.id) == []
    assert await _event_types(db, template_id=kept.id) == ["template.created"]
    assert await _event_types(db, template_id=recent.id) == [
        "template.created",
        "template.deleted",
    ]
    assert await _event_types(db, type="api_key.created") == ["api_key.created"]


@contextlib.contextmanager
def statements(db: Database, prefix: str) -> Iterator[list[str]]:
    """The SQL statements starting with ``prefix`` run through ``db`` meanwhile."""
    seen: list[str] = []

    def listen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if sql.lstrip().upper().startswith(prefix):
            seen.append(sql)

    for engine in db.sync_engines:
        event.listen(engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        for engine in db.sync_engines:
            event.remove(engine, "before_cursor_execute", listen)


async def _worker_row(db: Database, worker_id: str, status: str, heartbeat_at: datetime) -> None:
    row = {
        "id": worker_id,
        "hostname": "host",
        "pid": 1,
        "queues": ["default"],
        "concurrency": 1,
        "task_types": [],
        "status": status,
        "started_at": heartbeat_at,
        "heartbeat_at": heartbeat_at,
        "stopped_at": heartbeat_at if status == "stopped" else None,
    }
    async with db.transaction() as conn:
        await conn.execute(insert(workers).values(row))


async def test_retention_integration_gone_workers_go_after_the_longest_job_age(
    store: SqlStore, db: Database
) -> None:
    """Each process that runs a worker adds a row; stopped and dead ones whose last
    heartbeat is older than the longest job age go (the jobs they ran may name them
    until then); alive ones and recent ones stay, and so does every row when some job
    age keeps forever."""
    forty_days, ten_days = OLD, REAL_NOW - timedelta(days=10)
    await _worker_row(db, "stopped-long-ago", "stopped", forty_days)
    await _worker_row(db, "dead-long-ago", "dead", forty_days)
    await _worker_row(db, "alive-but-silent", "alive", forty_days)  # marked dead first
    await _worker_row(db, "stopped-ten-days-ago", "stopped", ten_days)  # failed jobs: 30d
    cutoffs = DEFAULTS.cutoffs(REAL_NOW)
    forever = Retention(timedelta(days=7), None, timedelta(days=30), None).cutoffs(REAL_NOW)

    assert await store.count_prunable(forever) == PruneCounts()
    assert await store.count_prunable(cutoffs) == PruneCounts(workers=2)
    batches = await prune_all(store, cutoffs, limit=1)

    assert [b.workers for b in batches] == [1, 1, 0]
    listed = {w.id for w in await store.list_workers()}
    assert listed == {"alive-but-silent", "stopped-ten-days-ago"}


async def test_retention_integration_batches_are_bounded(store: SqlStore, db: Database) -> None:
    for _ in range(25):
        await finished(store, JobStatus.CANCELLED, OLD)
    cutoffs = DEFAULTS.cutoffs(REAL_NOW)

    with statements(db, "DELETE FROM JOBS") as deletes:
        batches = await prune_all(store, cutoffs, limit=10)

    assert [b.jobs for b in batches] == [10, 10, 5, 0]
    assert len(deletes) == 3  # one DELETE of jobs per batch, each of at most 10 ids
    assert await _job_ids(db) == set()


async def test_retention_integration_pruner_service_in_a_runtime(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        database={"url": sqlite_url},
        api={"secret_key_file": str(tmp_path / "secret")},
        retention={"batch_size": 2, "pause_seconds": 0},
    )
    runtime = Runtime(settings, TaskRegistry())
    await runtime.open()
    store = runtime.store
    assert isinstance(store, SqlStore)
    old = [await finished(store, JobStatus.SUCCEEDED, OLD) for _ in range(3)]
    young = await finished(store, JobStatus.SUCCEEDED, YOUNG)
    before = REGISTRY.get_sample_value("taskmill_pruned_rows_total", {"table": "jobs"}) or 0.0
    stop = asyncio.Event()
    running = asyncio.create_task(runtime.run(stop, runtime.services(only={"pruner"})))
    try:

        async def pruned() -> bool:
            return await _job_ids(runtime.db) == {young}

        await wait_for(pruned)
    finally:
        stop.set()
        await running
        await runtime.close()
    after = REGISTRY.get_sample_value("taskmill_pruned_rows_total", {"table": "jobs"})
    assert after == before + len(old)
    assert "pruner" in Runtime(settings, TaskRegistry()).services()
