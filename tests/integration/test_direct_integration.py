"""store/postgres/direct.py on a real PostgreSQL: what asyncpg returns straight must be what
SQLAlchemy would have returned, and driver errors must become taskmill errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    any_,
    bindparam,
    delete,
    event,
    func,
    literal,
    select,
    text,
)

from taskmill.core.errors import Conflict, StorageFull, StoreError, StoreUnavailable
from taskmill.core.jobs import DependencyFailurePolicy
from taskmill.store import claims
from taskmill.store import jobs as job_store
from taskmill.store.database import Database as AnyDatabase
from taskmill.store.errors import from_asyncpg
from taskmill.store.jobs import NewJob, make_job
from taskmill.store.notify import QUEUED
from taskmill.store.postgres import direct, statements
from taskmill.store.postgres.database import PostgresDatabase as Database
from taskmill.store.postgres.statements import insert_jobs
from taskmill.store.schema import events, jobs

RUN_ANYWAY = DependencyFailurePolicy.RUN
NOW = datetime(2026, 12, 1, 9, 30, 15, 250_000, tzinfo=UTC)
ALL_JOBS = select(*jobs.c).where(jobs.c.id == any_(bindparam("ids", type_=ARRAY(String))))


def _open(url: str, *, pool_size: int = 10) -> Database:
    db = AnyDatabase.from_url(url, pool_size=pool_size)
    assert isinstance(db, Database)
    return db


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    db = _open(postgres_url)
    yield db
    await db.close()


async def _insert(db: Database, *news: NewJob) -> list[str]:
    made = [make_job(new, NOW, "test", queue_if_due=True) for new in news]
    await insert_jobs(db, made)
    return [m.row["id"] for m in made]


async def test_direct_rows_equal_what_sqlalchemy_reads(pg: Database) -> None:
    """Every column type of ``jobs`` (JSON of each shape, UTC timestamps, enums, floats,
    nulls) comes back from asyncpg as SQLAlchemy's result gives it."""
    ids = await _insert(
        pg,
        NewJob("t", NOW, payload={"nested": [1, 2.5, None, {"k": "é"}]}, timeout_seconds=1.5),
        NewJob("t", NOW - timedelta(days=3), payload=None, priority=7, queue="q2"),
        NewJob("t", NOW.astimezone(timezone(timedelta(hours=5))), payload=[True, "x"]),
    )
    async with pg.read() as conn:
        expected = [dict(r._mapping) for r in (await conn.execute(ALL_JOBS, {"ids": ids})).all()]
    got = await direct.fetch(pg, ALL_JOBS, {"ids": ids})
    assert sorted(got, key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    for mine, theirs in zip(
        sorted(got, key=lambda r: r["id"]), sorted(expected, key=lambda r: r["id"]), strict=True
    ):
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}
    assert {row["run_at"].tzinfo for row in got} == {UTC}


async def test_direct_claim_returns_jobs_as_the_transaction_path_does(pg: Database) -> None:
    """The one-statement claim (run by ``direct``) and the row read afterwards agree."""
    [job_id] = await _insert(pg, NewJob("t", NOW, payload={"a": 1}, max_attempts=2))
    params = claims.ClaimParams(
        worker_id="w1", limit=5, lease_seconds=30, queues=["default"], task_types=["t"]
    )
    [claimed] = await statements.claim(pg, params)
    async with pg.read() as conn:
        row = (await conn.execute(ALL_JOBS, {"ids": [job_id]})).one()
    assert claimed.id == job_id and claimed.payload == {"a": 1}
    assert (claimed.status.value, claimed.attempt, claimed.worker_id) == ("running", 1, "w1")
    assert claimed.lease_expires_at == row.lease_expires_at
    assert claimed.started_at == row.started_at


async def test_direct_duplicate_key_is_a_conflict(pg: Database) -> None:
    made = make_job(NewJob("t", NOW), NOW, "test", queue_if_due=True)
    await insert_jobs(pg, [made])
    with pytest.raises(Conflict) as err:
        await insert_jobs(pg, [made])
    # The message reaches API clients: no database text; the driver's error is the cause.
    assert str(err.value) == "conflicts with existing data"
    assert "duplicate key" in str(err.value.__cause__)


async def test_direct_statement_error_is_a_store_error_and_the_connection_stays(
    pg: Database,
) -> None:
    divide = select((literal(1) / bindparam("zero", type_=Integer)).label("x"))
    with pytest.raises(StoreError, match="division by zero") as raised:
        await direct.fetch(pg, divide, {"zero": 0})
    assert not isinstance(raised.value, StoreUnavailable)
    assert await direct.fetch(pg, divide, {"zero": 1}) == [{"x": 1}]


async def test_direct_lost_connection_is_unavailable_and_not_reused(
    pg: Database, postgres_url: str
) -> None:
    """A backend killed mid-statement raises ``StoreUnavailable``; the pool drops that
    connection (one connection only: it would be handed out again), so the next
    statement runs on a fresh one."""
    single = _open(postgres_url, pool_size=1)
    sleep = select(func.pg_sleep(bindparam("seconds", type_=Integer)).label("slept"))
    find = text(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
        "AND pid <> pg_backend_pid()"
    )
    try:
        running = asyncio.create_task(direct.fetch(single, sleep, {"seconds": 30}))
        pid = None
        for _ in range(200):
            async with pg.read() as conn:
                pid = (await conn.execute(find)).scalar()
            if pid is not None:
                break
            await asyncio.sleep(0.02)
        assert pid is not None, "the sleeping statement never showed up"
        async with pg.read() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(StoreUnavailable):
            await running
        [row] = await direct.fetch(single, select(func.pg_backend_pid().label("pid")), {})
        assert row["pid"] != pid
    finally:
        await single.close()


async def test_direct_refuses_expanding_parameters(pg: Database) -> None:
    listed = select(jobs.c.id).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        direct.compile_statement(listed, pg.engine.dialect)


async def test_direct_compiles_a_statement_once_per_dialect(pg: Database) -> None:
    dialect = pg.engine.dialect
    first = direct.compile_statement(ALL_JOBS, dialect)
    assert direct.compile_statement(ALL_JOBS, dialect) is first
    assert "= ANY (" in first.sql and [name for name, _ in first.binds] == ["ids"]


async def test_direct_value_the_driver_cannot_encode_is_a_store_error(pg: Database) -> None:
    """A value of the wrong type fails that statement only: no connection is dropped."""
    limited = select(jobs.c.id).limit(bindparam("limit", type_=Integer))
    with pytest.raises(StoreError, match="invalid input") as raised:
        await direct.fetch(pg, limited, {"limit": "ten"})
    assert not isinstance(raised.value, StoreUnavailable)
    assert await direct.fetch(pg, limited, {"limit": 1}) == []


def test_direct_disk_full_is_storage_full() -> None:
    """PostgreSQL out of disk (SQLSTATE 53100) is ``StorageFull``, as on SQLite."""
    import asyncpg

    error = from_asyncpg(asyncpg.DiskFullError("could not extend file"), closed=False)
    assert isinstance(error, StorageFull) and "could not extend" in str(error)
    assert from_asyncpg(KeyError("not the driver's"), closed=False) is None


async def test_populator_round_wakes_workers_listening_for_queued_jobs(
    pg: Database, postgres_url: str
) -> None:
    """Workers on the database broker wait on ``LISTEN``: the one-statement populator
    round notifies them when it queued jobs, and stays quiet when it queued none."""
    import asyncpg

    await _insert(pg, NewJob("t", NOW + timedelta(seconds=5)))
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(postgres_url)
    try:
        await listener.add_listener(QUEUED, lambda _c, _p, channel, _d: heard.put_nowait(channel))
        queued, _ = await statements.enqueue_due_and_next(pg, now=NOW, limit=10, actor="p")
        assert queued == []
        await asyncio.sleep(0.2)
        assert heard.empty()
        later = NOW + timedelta(seconds=6)
        queued, _ = await statements.enqueue_due_and_next(pg, now=later, limit=10, actor="p")
        assert len(queued) == 1
        assert await asyncio.wait_for(heard.get(), timeout=5) == QUEUED
    finally:
        await listener.close()


async def test_direct_statements_reach_the_engines_cursor_listeners(pg: Database) -> None:
    """Tools that watch the engine (bench.support.StatementLog explains the populator's
    plan) see a direct statement too, with the values it ran with, which run again as
    they are."""
    seen: list[tuple[str, tuple[object, ...]]] = []

    def note(
        _conn: object, _cursor: object, sql: str, params: tuple[object, ...], *_: object
    ) -> None:
        seen.append((sql, params))

    event.listen(pg.engine.sync_engine, "before_cursor_execute", note)
    [job_id] = await _insert(pg, NewJob("t", NOW))
    await direct.fetch(pg, ALL_JOBS, {"ids": [job_id]})
    event.remove(pg.engine.sync_engine, "before_cursor_execute", note)
    await direct.fetch(pg, ALL_JOBS, {"ids": [job_id]})  # no listener: not seen
    assert [sql.split()[0] for sql, _ in seen] == ["WITH", "SELECT"]
    sql, params = seen[1]
    assert sql == direct.compile_statement(ALL_JOBS, pg.engine.dialect).sql
    async with pg.read() as conn:
        again = (await conn.exec_driver_sql(sql, params)).all()
    assert [row.id for row in again] == [job_id]


async def test_direct_database_that_cannot_be_reached_is_unavailable(postgres_url: str) -> None:
    """The pool's checkout raises the driver's connect error unwrapped (``engine.connect()``
    would wrap it): it is ``StoreUnavailable``, which the services wait out and retry."""
    missing = _open(postgres_url.rsplit("/", 1)[0] + "/taskmill_no_such_database")
    try:
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await direct.fetch(missing, select(literal(1).label("one")), {})
    finally:
        await missing.close()


@pytest.mark.parametrize("count", [statements.FEW, 5], ids=["row_by_row", "unnested"])
async def test_the_producers_insert_writes_what_the_shared_insert_writes(
    pg: Database, count: int
) -> None:
    """``statements.insert_jobs`` (a few jobs bound row by row; more as arrays, with their
    ``job.created`` and ``job.queued`` events built in SQL) writes, column for column and
    in log order, what ``jobs.insert_made`` writes from Python (replay depends on it)."""
    later = NOW + timedelta(hours=1)
    news = [
        NewJob("t", NOW, payload={"nested": [1, 2.5, None, {"k": "é"}]}, timeout_seconds=1.5),
        NewJob("t", later, payload=None, priority=-3, queue="q2", max_attempts=4),
        NewJob("t", NOW, payload=[True, "x"], scheduled_for=NOW.replace(microsecond=0)),
        NewJob("t", NOW, payload="text", idempotency_key="idem", unique_key="uniq"),
        NewJob(
            "t",
            NOW,
            payload=7,
            trace_context="00-ab-cd-01",
            on_dependency_failure=DependencyFailurePolicy.RUN,
        ),
    ]
    assert len(news) > statements.FEW
    made = [
        make_job(new, NOW, f"actor{i}", queue_if_due=i % 2 == 0)
        for i, new in enumerate(news[:count])
    ]

    async def written() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        async with pg.transaction() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(select(jobs))).all()]
            logged = (await conn.execute(select(events).order_by(events.c.id))).all()
            await conn.execute(delete(events))
            await conn.execute(delete(jobs))
        rows.sort(key=lambda r: str(r["id"]))
        return rows, [{k: v for k, v in r._mapping.items() if k != "id"} for r in logged]

    await job_store.insert_made(pg, made)
    shared = await written()
    await insert_jobs(pg, made)
    assert await written() == shared
    assert [e["type"] for e in shared[1]][:3] == ["job.created", "job.queued", "job.created"]
