"""Transactional enqueue (issue 22): ``schedule(..., connection=...)`` writes the job and
its event in the caller's SQLAlchemy transaction, on SQLite and PostgreSQL: they exist
if and only if the caller commits, and the job starts after the commit without waiting
for the populator's poll (set to a minute here)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import NotFound, ValidationError
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.engine import async_url
from tests import backends
from tests.conftest import wait_for

SLOW = {"scheduler": {"poll_interval_seconds": 60, "wait_poll_seconds": 60}}

orders_meta = MetaData()
orders = Table(
    "orders", orders_meta, Column("id", Integer, primary_key=True), Column("item", String)
)


def make_app(url: str, **sections: Any) -> Taskmill:
    settings = load_settings("test", None, database={"url": url}, **SLOW, **sections)
    app = Taskmill(settings=settings)

    @app.task("email", max_retries=0)
    async def email(ctx: TaskContext, payload: Any) -> Any:
        return {"sent": payload}

    return app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    app = make_app(database_url)
    await app.open()
    yield app
    await app.stop()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The application's own engine on taskmill's database, with its own table."""
    engine = create_async_engine(async_url(database_url))
    async with engine.begin() as conn:
        await conn.run_sync(orders_meta.create_all)
    yield engine
    await engine.dispose()


async def count_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(orders))).scalar_one())


async def test_a_job_scheduled_on_a_committed_connection_exists_and_runs(
    app: Taskmill, engine: AsyncEngine
) -> None:
    await app.start()
    async with engine.begin() as conn:
        await conn.execute(orders.insert().values(item="book"))
        job = await app.schedule("email", "a@example.com", connection=conn)
        assert isinstance(job, Job) and job.status is JobStatus.SCHEDULED
    # Only the commit's wake-up (or NOTIFY) can start it: the poll is a minute away.
    done = await app.wait(job.id, timeout=20)
    assert done.status is JobStatus.SUCCEEDED and done.result == {"sent": "a@example.com"}
    assert await count_orders(engine) == 1
    assert [e.type.value for e in await app.events(job.id)][:1] == ["job.created"]


async def test_a_rolled_back_connection_leaves_neither_job_nor_event(
    app: Taskmill, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        trans = await conn.begin()
        await conn.execute(orders.insert().values(item="book"))
        job = await app.schedule("email", "b@example.com", connection=conn)
        many = await app.schedule_many("email", [1, 2], connection=conn)
        await trans.rollback()
    assert isinstance(job, Job)
    with pytest.raises(NotFound):
        await app.get(job.id)
    assert await app.list() == [] and await app.events() == []
    assert len(many) == 2 and await count_orders(engine) == 0


async def test_a_session_commits_or_rolls_back_the_job_with_its_rows(
    app: Taskmill, engine: AsyncEngine
) -> None:
    async with AsyncSession(engine) as session:
        await session.execute(orders.insert().values(item="kept"))
        kept = await app.schedule("email", "kept", connection=session)
        await session.commit()
        await session.execute(orders.insert().values(item="dropped"))
        dropped = await app.schedule("email", "dropped", connection=session, unique_key="d")
        await session.rollback()
    assert isinstance(kept, Job) and isinstance(dropped, Job)
    assert (await app.runtime.jobs.get(ALL_MERCHANTS, kept.id)).status is JobStatus.SCHEDULED
    with pytest.raises(NotFound):
        await app.get(dropped.id)
    assert await count_orders(engine) == 1


async def test_unique_key_in_the_callers_transaction_returns_the_held_job(
    app: Taskmill, engine: AsyncEngine
) -> None:
    held = await app.schedule("email", "first", unique_key="order-1")
    async with engine.begin() as conn:
        again = await app.schedule("email", "second", connection=conn, unique_key="order-1")
    assert isinstance(held, Job) and isinstance(again, Job) and again.id == held.id


async def test_a_connection_to_another_database_is_refused(app: Taskmill, tmp_path: Path) -> None:
    other = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    try:
        async with other.begin() as conn:
            with pytest.raises(ValidationError) as refused:
                await app.schedule("email", "x", connection=conn)
        assert refused.value.field == "connection"
    finally:
        await other.dispose()
    with pytest.raises(ValidationError) as not_one:
        await app.schedule("email", "x", connection="not a connection")
    assert not_one.value.field == "connection"
    with pytest.raises(ValidationError) as recurring:
        await app.schedule("email", interval=60, connection=object())
    assert recurring.value.field == "connection"
    assert await app.list() == []


async def test_postgres_notify_at_commit_starts_the_job_in_another_process(
    postgres_url: str,
) -> None:
    """The producer runs no services: only the ``taskmill_due`` notification queued in
    the caller's transaction (delivered at its commit) wakes the other process's
    populator before its minute-long poll."""
    producer, worker = make_app(postgres_url), make_app(postgres_url)
    engine = create_async_engine(async_url(postgres_url))
    try:
        await worker.start()
        await producer.open()
        async with engine.begin() as conn:
            job = await producer.schedule("email", "c@example.com", connection=conn)
        assert isinstance(job, Job)
        done = await producer.wait(job.id, timeout=20)
        assert done.status is JobStatus.SUCCEEDED
    finally:
        await engine.dispose()
        await producer.stop()
        await worker.stop()


async def test_a_unique_key_race_between_two_transactions_costs_a_savepoint_only(
    postgres_url: str,
) -> None:
    """The second transaction's insert waits on the first's uncommitted key, is refused
    at its commit, and answers the first's job; its own row still commits."""

    def racing(app: Taskmill, second: AsyncConnection) -> Coroutine[Any, Any, Any]:
        return app.schedule("email", 2, connection=second, unique_key="race")

    async with _second_races_the_first(postgres_url, racing) as (app, engine, mine, theirs):
        assert isinstance(mine, Job) and isinstance(theirs, Job) and theirs.id == mine.id
        assert [j.id for j in await app.list()] == [mine.id]
        assert await count_orders(engine) == 1


async def test_a_unique_key_race_in_a_batch_costs_a_savepoint_only(postgres_url: str) -> None:
    """``schedule_many`` in a transaction whose unique key another transaction took
    meanwhile: the batch waits on the key, is refused at the other's commit, and is
    tried again in a savepoint; the key's job is the answer in its place, the batch's
    other job is created, and the caller's own row still commits."""

    def racing(app: Taskmill, second: AsyncConnection) -> Coroutine[Any, Any, Any]:
        return app.schedule_many("email", [2, 3], unique_keys=["race", "free"], connection=second)

    async with _second_races_the_first(postgres_url, racing) as (app, engine, mine, batch):
        theirs, other = batch
        assert isinstance(mine, Job) and theirs.id == mine.id and other.id != mine.id
        assert {j.id for j in await app.list()} == {mine.id, other.id}
        assert await count_orders(engine) == 1


@contextlib.asynccontextmanager
async def _second_races_the_first(
    postgres_url: str, racing: Callable[[Taskmill, AsyncConnection], Coroutine[Any, Any, Any]]
) -> AsyncIterator[tuple[Taskmill, AsyncEngine, Job, Any]]:
    """A first transaction takes unique key ``race``; a second, ``racing`` on it, waits
    on that key until the first commits, then writes an order of its own and commits.
    Yields the app, the engine, the first's job and what ``racing`` returned."""
    app = make_app(postgres_url)
    engine = create_async_engine(async_url(postgres_url))
    try:
        await app.open()
        async with engine.begin() as setup:
            await setup.run_sync(orders_meta.create_all)
        async with engine.connect() as first, engine.connect() as second:
            await first.begin()
            await second.begin()
            mine = await app.schedule("email", 1, connection=first, unique_key="race")
            assert isinstance(mine, Job)
            raced = asyncio.create_task(racing(app, second))
            await wait_for(lambda: _waiting_on_a_lock(engine))  # on the first's key
            await first.commit()
            theirs = await raced
            await second.execute(orders.insert().values(item="kept"))
            await second.commit()
        yield app, engine, mine, theirs
    finally:
        await engine.dispose()
        await app.stop()


async def _waiting_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(waiting.scalar_one())


async def test_with_redis_the_hint_goes_out_after_the_commit_from_the_populator(
    postgres_url: str, redis_available: None
) -> None:
    """A Redis producer creates a due job ``queued`` and hints it itself; in the
    caller's transaction it creates it ``scheduled`` instead (no hint before the
    commit), and the populator of another process queues and hints it."""
    broker = {"url": backends.REDIS_URL, "prefix": f"taskmill-test-{uuid.uuid4().hex[:10]}"}
    producer = make_app(postgres_url, broker=broker)
    worker = make_app(postgres_url, broker=broker)
    engine = create_async_engine(async_url(postgres_url))
    try:
        await worker.start()
        await producer.open()
        direct = await producer.schedule("email", "direct")
        async with engine.begin() as conn:
            mine = await producer.schedule("email", "in a transaction", connection=conn)
        assert isinstance(direct, Job) and isinstance(mine, Job)
        assert (direct.status, mine.status) == (JobStatus.QUEUED, JobStatus.SCHEDULED)
        done = await producer.wait(mine.id, timeout=20)
        assert done.status is JobStatus.SUCCEEDED
        queued = [e for e in await producer.events(mine.id) if e.type.value == "job.queued"]
        assert [e.actor for e in queued] == ["queue-populator"]
    finally:
        await engine.dispose()
        await producer.stop()
        await worker.stop()
        await backends.delete_prefix(broker["prefix"])
