"""SQLite writes run whole on one thread (``store/sqlite/writer.py``): all or nothing,
translated errors, a cancelled caller that returns only once its write has ended, store
functions run there through ``Database.write``, and no thread left behind by
``Database.close()``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.errors import Conflict
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.jobs import MadeJob, NewJob, get_job, insert_made, make_job
from taskmill.store.schema import events, jobs

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(sqlite_url)
    yield database
    await database.close()


def _made(n: int) -> MadeJob:
    new = NewJob(task_type="echo", run_at=NOW, payload={"n": n, "text": "é"}, priority=n)
    return make_job(new, NOW, "test", queue_if_due=False)


async def _counts(db: Database) -> tuple[int, int]:
    async with db.read() as conn:
        n_jobs = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
        n_events = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
    return n_jobs, n_events


async def test_sqlite_writer_a_batch_is_stored_whole_or_not_at_all(db: Database) -> None:
    first, second = _made(1), _made(2)
    clash = MadeJob({**_made(3).row, "id": first.row["id"]}, _made(3).events)
    with pytest.raises(Conflict):
        await insert_made(db, [first, second, clash])
    assert await _counts(db) == (0, 0)

    await insert_made(db, [first, second])
    assert await _counts(db) == (2, 2)
    stored = await get_job(
        db, second.row["id"], ALL_MERCHANTS
    )  # read back through the async engine
    assert stored.payload == {"n": 2, "text": "é"} and stored.priority == 2
    assert stored.run_at == NOW and stored.status is JobStatus.SCHEDULED


async def test_sqlite_writer_a_write_that_raises_is_rolled_back(db: Database) -> None:
    async def half_done(conn: AsyncConnection) -> None:
        await conn.execute(insert(jobs), _made(1).row)
        raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        await db.write(half_done)
    assert await _counts(db) == (0, 0)
    await insert_made(db, [_made(2)])  # the writer's connection is still good
    assert await _counts(db) == (1, 1)


async def test_sqlite_writer_a_cancelled_caller_returns_once_its_write_ended(
    db: Database, sqlite_url: str
) -> None:
    """The thread cannot be stopped halfway: the caller's cancellation waits for the
    commit, so the write lock is never let go while SQLite's is still held."""
    made = _made(1)

    async def slow(conn: AsyncConnection) -> None:
        await conn.execute(insert(jobs), made.row)
        time.sleep(0.3)  # noqa: ASYNC251 (runs on the writer thread, not the loop)

    writing = asyncio.create_task(db.write(slow))
    await asyncio.sleep(0.05)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    path = sqlite_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as check:  # not through the write lock
        ids = [row[0] for row in check.execute("SELECT id FROM jobs")]
    assert ids == [made.row["id"]]


def _writer_threads() -> int:
    return sum(t.name.startswith("taskmill-sqlite") for t in threading.enumerate())


async def test_sqlite_writer_close_stops_its_thread(sqlite_url: str) -> None:
    before = _writer_threads()
    database = Database.from_url(sqlite_url)
    await insert_made(database, [_made(1)])
    assert _writer_threads() == before + 1
    await database.close()
    assert _writer_threads() == before


async def test_sqlite_writer_runs_a_whole_write_on_its_thread(db: Database) -> None:
    """``Database.write`` on SQLite: the store function's statements run on the writer
    thread, results come back, and the transaction commits."""
    await insert_made(db, [_made(1), _made(2)])
    threads: list[str] = []

    async def bump(conn: AsyncConnection) -> list[str]:
        threads.append(threading.current_thread().name)
        await conn.execute(update(jobs).values(priority=jobs.c.priority + 10))
        rows = (await conn.execute(select(jobs.c.id).order_by(jobs.c.priority))).all()
        return [row.id for row in rows]

    ids = await db.write(bump)
    assert len(ids) == 2 and threads[0].startswith("taskmill-sqlite")
    assert [(await get_job(db, i, ALL_MERCHANTS)).priority for i in ids] == [11, 12]


async def test_sqlite_writer_refuses_a_write_that_waits_and_stores_nothing(
    db: Database,
) -> None:
    """A write that awaits anything but its connection cannot run on the writer thread
    (there is no event loop there): a clear error, and its statements are rolled back."""

    async def waits(conn: AsyncConnection) -> None:
        await conn.execute(insert(jobs), _made(1).row)
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something besides its connection"):
        await db.write(waits)
    assert await _counts(db) == (0, 0)


async def test_database_write_on_postgresql_is_a_transaction(postgres_url: str) -> None:
    database = Database.from_url(postgres_url)
    try:

        async def add(conn: AsyncConnection) -> int:
            await conn.execute(insert(jobs), _made(1).row)
            return 1

        assert await database.write(add) == 1
        assert await _counts(database) == (1, 0)
    finally:
        await database.close()
