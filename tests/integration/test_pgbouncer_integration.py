"""Behind PgBouncer in transaction pooling mode (how most production PostgreSQL is
reached): with ``database.transaction_pooler`` every statement runs, a new database
migrates, and an app runs its jobs, hearing other processes' work through a direct
``listen_url`` or, without one, at its next poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import StoreError
from taskmill.core.jobs import Job, JobStatus
from taskmill.store import migrate
from taskmill.store.claims import ClaimParams
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, make_job
from taskmill.store.outcomes import Attempt, Success
from taskmill.store.schema import jobs as jobs_table
from tests import backends
from tests.pgbouncer import SERVER_POOL_SIZE, pgbouncer, through

CLIENTS = 100  # concurrent operations, over a few dozen client connections


@pytest.fixture
def pooler_port() -> Iterator[int]:
    with pgbouncer() as port:
        yield port


@pytest.fixture
async def empty_url(postgres_template: str | None) -> AsyncIterator[str]:
    """A new PostgreSQL database with no schema: the first start migrates it."""
    if postgres_template is not None:
        backends.unavailable(postgres_template)
    name, url = await backends.empty_postgres()
    try:
        yield url
    finally:
        await backends.drop_postgres(name)


async def _everything_once(db: Database, i: int) -> None:
    """One job through the SQLAlchemy path and one through asyncpg directly, a claim,
    its outcome and reads: each operation kind a process runs."""
    store = store_for(db)
    now = datetime.now(UTC)
    await store.create_job(NewJob("t", now), actor="test", now=now, queue_if_due=True)
    await store.insert_jobs([make_job(NewJob("t", now), now, "test", True)])
    claimed = await store.claim(
        ClaimParams(
            worker_id=f"w{i}", limit=2, lease_seconds=30, queues=["default"], task_types=["t"]
        )
    )
    successes = [Success(Attempt(job.id, job.attempt, f"w{i}"), {"i": i}) for job in claimed]
    await store.record_outcomes(successes, [])
    await store.list_workers()


async def _run_everything(db: Database) -> list[BaseException]:
    outcomes = await asyncio.gather(
        *(_everything_once(db, i) for i in range(CLIENTS)), return_exceptions=True
    )
    return [o for o in outcomes if isinstance(o, BaseException)]


async def test_without_the_setting_statements_break_behind_the_pooler(
    postgres_url: str, pooler_port: int
) -> None:
    """The control: asyncpg's named prepared statements do not survive a transaction
    pooler, so this test's PgBouncer really hands transactions to other connections."""
    db = Database.from_url(through(postgres_url, pooler_port), pool_size=20)
    try:
        errors = await _run_everything(db)
    finally:
        await db.close()
    assert any(isinstance(e, StoreError) and "prepared statement" in str(e) for e in errors)


async def test_with_the_setting_a_new_database_migrates_and_every_statement_runs(
    empty_url: str, pooler_port: int
) -> None:
    db = Database.from_url(through(empty_url, pooler_port), pool_size=20, transaction_pooler=True)
    try:
        await migrate.upgrade(db)
        assert await migrate.is_current(db)
        assert await _run_everything(db) == []
        async with db.read() as conn:
            rows = await conn.execute(
                select(jobs_table.c.status, func.count()).group_by(jobs_table.c.status)
            )
            counts = {str(status): n for status, n in rows}
    finally:
        await db.close()
    # Claims race, so some jobs stay queued; every job exists, and the claimed succeeded.
    assert counts.get("succeeded", 0) + counts.get("queued", 0) == 2 * CLIENTS, counts
    assert counts.get("succeeded", 0) > 0
    assert SERVER_POOL_SIZE < 20  # the clients shared fewer server connections


def _app(url: str, *, poll: float = 30.0, **database: Any) -> Taskmill:
    settings = load_settings(
        database={"url": url, "transaction_pooler": True, **database},
        # With 30 s, only a notification can start another process's job in time.
        scheduler={"poll_interval_seconds": poll},
        worker={"concurrency": 20},
    )
    return Taskmill(settings=settings)


async def _wait_succeeded(producer: Taskmill, ids: list[str], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    pending = set(ids)
    while pending:
        assert asyncio.get_running_loop().time() < deadline, f"{len(pending)} not done"
        for job_id in list(pending):
            job = await producer.get(job_id)
            if isinstance(job, Job) and job.status is JobStatus.SUCCEEDED:
                pending.discard(job_id)
        await asyncio.sleep(0.1)


async def test_an_app_behind_the_pooler_runs_jobs_another_process_schedules(
    empty_url: str, pooler_port: int
) -> None:
    """Worker and producer (each its own pools, as two processes) reach PostgreSQL
    through PgBouncer; the worker listens on a direct ``listen_url``, so jobs the
    producer schedules start at once although its poll interval is 30 s."""
    pooled = through(empty_url, pooler_port)
    worker, producer = _app(pooled, listen_url=empty_url), _app(pooled)
    seen: list[int] = []

    @worker.task("count")
    async def count(ctx: Any, payload: dict[str, int]) -> int:
        seen.append(payload["n"])
        return payload["n"]

    producer.task("count")(count)
    assert "pg-listener" in worker.runtime.services()
    await worker.start()
    try:
        await asyncio.sleep(0.5)  # the listener is connected
        jobs = await asyncio.gather(*(producer.schedule("count", {"n": n}) for n in range(200)))
        await _wait_succeeded(producer, [job.id for job in jobs], timeout=20)
        assert sorted(seen) == list(range(200))
    finally:
        await worker.stop()
        await producer.stop()


async def test_without_listen_url_the_app_polls(empty_url: str, pooler_port: int) -> None:
    """No direct URL: no listener (a pooler cannot keep a LISTEN); work another process
    queues is found at the next poll."""
    pooled = through(empty_url, pooler_port)
    worker = _app(pooled, poll=0.2)
    producer = _app(pooled)

    @worker.task("echo")
    async def echo(ctx: Any, payload: dict[str, int]) -> int:
        return payload["n"]

    producer.task("echo")(echo)
    assert "pg-listener" not in worker.runtime.services()
    await worker.start()
    try:
        jobs = await asyncio.gather(*(producer.schedule("echo", {"n": n}) for n in range(20)))
        await _wait_succeeded(producer, [job.id for job in jobs], timeout=20)
    finally:
        await worker.stop()
        await producer.stop()
