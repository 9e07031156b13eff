"""``schedule()`` calls made at the same moment share one insert (one statement on
PostgreSQL, one transaction on SQLite; services/insert_batcher.py): every caller still
gets its own job, a bad one fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import Conflict
from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.insert_batcher import InsertBatcher
from taskmill.services.scheduling import ScheduleRequest
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, get_job, list_jobs, make_job
from taskmill.store.replay import projection_diff
from tests.jobs import job_of


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    application = Taskmill(settings=load_settings("test", None, database={"url": database_url}))

    @application.task("echo")
    async def echo(ctx: TaskContext, payload: Any) -> Any:
        return payload

    yield application
    await application.stop()


def _count_job_inserts(app: Taskmill) -> list[str]:
    """The statements that insert jobs, as the engine's listeners see them (those
    ``store/postgres/direct.py`` runs on asyncpg included)."""
    sent: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO jobs " in statement:
            sent.append(statement)

    for engine in app.runtime.db.sync_engines:
        event.listen(engine, "before_cursor_execute", before)
    return sent


async def test_insert_batcher_integration_concurrent_schedules_each_get_their_job(
    app: Taskmill,
) -> None:
    await app.open()
    inserts = _count_job_inserts(app)
    made = await asyncio.gather(*(app.schedule("echo", {"n": n}) for n in range(30)))
    assert all(isinstance(job, Job) for job in made)
    assert len({job.id for job in made}) == 30
    for n, job in enumerate(made):
        stored = await job_of(app, job.id)
        assert stored.payload == {"n": n} and stored.status is JobStatus.SCHEDULED
        assert [e.type for e in await app.events(job.id)] == [EventType.JOB_CREATED]
    assert await projection_diff(app.runtime.db) == []
    assert 1 <= len(inserts) < 30  # grouped: 30 callers, fewer statements


async def test_insert_batcher_integration_a_bad_row_fails_alone(app: Taskmill) -> None:
    """A row the database refuses (a merchant that does not exist) fails its own
    caller; the calls batched with it are created all the same."""
    runtime = await app.open()

    def request(merchant: str | None = None) -> ScheduleRequest:
        if merchant is None:
            return ScheduleRequest(task="echo")
        return ScheduleRequest(task="echo", merchant_id=merchant)

    results = await asyncio.gather(
        *(runtime.scheduler.schedule(request()) for _ in range(3)),
        runtime.scheduler.schedule(request("no-such-merchant")),
        *(runtime.scheduler.schedule(request()) for _ in range(3)),
        return_exceptions=True,
    )
    assert isinstance(results[3], Conflict)
    good = [r for i, r in enumerate(results) if i != 3]
    for scheduled in good:
        assert not isinstance(scheduled, BaseException)
        assert (await job_of(app, scheduled.item.id)).status is JobStatus.SCHEDULED
    assert len(await list_jobs(runtime.db, ALL_MERCHANTS, JobFilter())) == 6


async def test_insert_batcher_integration_returns_at_the_commit_and_drain_waits_for_the_hint(
    postgres_url: str,
) -> None:
    """The caller gets its job once it is committed, before the broker hint is out (the
    announcer is slow here); ``drain()`` waits for the announcement."""
    db = Database.from_url(postgres_url)
    announced: list[str] = []
    release = asyncio.Event()

    async def slow_announce(created: Sequence[Job]) -> None:
        await release.wait()
        announced.extend(job.id for job in created)

    batcher = InsertBatcher(store_for(db), slow_announce)
    try:
        now = datetime.now(UTC)
        made = make_job(NewJob(task_type="echo", run_at=now), now, "test", queue_if_due=True)
        job = await asyncio.wait_for(batcher.insert(made), timeout=10)
        assert (await get_job(db, job.id, ALL_MERCHANTS)).status is JobStatus.QUEUED  # committed
        assert announced == []
        draining = asyncio.create_task(batcher.drain())
        await asyncio.sleep(0.05)
        assert not draining.done()  # still announcing
        release.set()
        await asyncio.wait_for(draining, timeout=10)
        assert announced == [job.id]
    finally:
        await db.close()
