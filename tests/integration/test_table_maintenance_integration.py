"""Table maintenance on PostgreSQL (issue 25): jobs churned through their states leave
dead row versions; one round in ``auto`` mode reclaims them, ``warn`` only says so,
``off`` does nothing, a failing VACUUM leaves the other tables, replicas never vacuum
one table together, and the claim reads the claim-order index whatever the backlog.

The server's autovacuum may be on (CI) or off (here): each test turns it off on its
own database's tables, so what it counts is what it did."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.table_health import HOT_TABLES, VacuumMode
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime
from taskmill.services.table_maintenance import MaintenanceConfig, TableMaintenance
from taskmill.store import migrate
from taskmill.store.claims import ClaimParams
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, make_job
from taskmill.store.outcomes import Attempt, Success
from taskmill.store.postgres import direct, statements
from taskmill.store.postgres.database import PostgresDatabase
from taskmill.store.postgres.maintenance import VACUUM_LOCK_KEY
from taskmill.store.protocol import Store
from tests.conftest import wait_for
from tests.integration.api_fixtures import serve_api

BATCH = 500
# Finished jobs (a day's history kept by retention), written by SQL: fast, and none of
# them a dead row version.
FINISHED = f"""
INSERT INTO jobs (id, merchant_id, task_type, queue, priority, status, schedule_type, run_at,
                  attempt, max_attempts, created_at, updated_at, finished_at)
SELECT 'done-' || g, '{DEFAULT_MERCHANT_ID}', 't', 'default', 0, 'succeeded', 'immediate',
       now(), 1, 1, now(), now(), now()
FROM generate_series(1, 20000) AS g
"""
# Two dead versions per job (claimed, succeeded) and one per run: 2,000 jobs leave about
# 4,000 in jobs and 2,000 in job_runs, over this threshold in both.
CHURNED = 2000
THRESHOLD = 1000


def params(limit: int = BATCH) -> ClaimParams:
    return ClaimParams(
        worker_id="w1", limit=limit, lease_seconds=30, queues=["default"], task_types=["t"]
    )


async def queue_jobs(store: Store, n: int) -> None:
    now = datetime.now(UTC)
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        made = [make_job(NewJob("t", now), now, "test", queue_if_due=True) for _ in range(count)]
        await store.insert_jobs(made)


async def churn(store: Store, n: int) -> None:
    """``n`` jobs through queued -> running -> succeeded, a batch at a time."""
    for start in range(0, n, BATCH):
        await queue_jobs(store, min(BATCH, n - start))
        claimed = await store.claim(params())
        successes = [Success(Attempt(j.id, j.attempt, "w1"), None) for j in claimed]
        await store.record_outcomes(successes, [])


async def sql(db: Database, statement: str) -> list[Any]:
    async with db.engine.connect() as raw:
        conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
        result = await conn.execute(text(statement))
        return list(result.all()) if result.returns_rows else []


async def dead_rows(store: Store, table: str) -> int:
    stats = await store.table_stats([table])
    assert stats is not None
    return stats[0].dead_rows


async def dead_at_least(store: Store, db: Database, table: str, n: int) -> None:
    """Wait until the statistics count ``n``. A backend reports its counts at most once a
    second, and up to 10 s later when idle; one that exits reports them at once: the
    pool's connections are closed (the next statement opens new ones)."""
    await db.engine.dispose()

    async def counted() -> bool:
        return await dead_rows(store, table) >= n

    await wait_for(counted, timeout=20, interval=0.2)


def vacuums(table: str, outcome: str) -> float:
    labels = {"table": table, "outcome": outcome}
    return REGISTRY.get_sample_value("taskmill_maintenance_vacuums_total", labels) or 0.0


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    db = Database.from_url(postgres_url)
    assert isinstance(db, PostgresDatabase)
    for table in HOT_TABLES:
        await sql(db, f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    yield db
    await db.close()


@pytest.fixture
def store(pg: PostgresDatabase) -> Store:
    return store_for(pg)


@pytest.fixture
def churned_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="taskmill.services.table_maintenance")
    yield caplog


def maintenance(store: Store, mode: VacuumMode, **kw: Any) -> TableMaintenance:
    return TableMaintenance(
        store, MaintenanceConfig(mode=mode, dead_rows_threshold=THRESHOLD, **kw)
    )


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


async def claim_plan(pg: PostgresDatabase) -> dict[str, Any]:
    """EXPLAIN of the claim statement the PostgreSQL driver runs, with its arguments."""
    compiled = direct.compile_statement(statements._claim_statement(by_id=False), pg.engine.dialect)
    arguments = compiled.arguments(statements._claim_values(params(limit=100)))
    async with pg.autocommit() as raw:
        conn: Any = raw.driver_connection
        explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {compiled.sql}", *arguments)
    # The engine decodes json columns itself; a bare connection would hand back text.
    document = json.loads(explained) if isinstance(explained, str) else explained
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


async def test_table_maintenance_auto_reclaims_dead_rows_and_claims_use_the_index(
    pg: PostgresDatabase, store: Store, churned_log: pytest.LogCaptureFixture
) -> None:
    await churn(store, CHURNED)
    await queue_jobs(store, 5000)  # a backlog the claim must not sort
    await sql(pg, FINISHED)  # and a history, so that the table has a realistic shape
    await dead_at_least(store, pg, "jobs", 2 * THRESHOLD)
    await dead_at_least(store, pg, "job_runs", THRESHOLD)
    before = vacuums("jobs", "done")

    vacuumed = await maintenance(store, VacuumMode.AUTO).run_once()

    assert vacuumed >= 2  # jobs and job_runs (others may have crossed it too)
    assert await dead_rows(store, "jobs") < THRESHOLD
    assert await dead_rows(store, "job_runs") < THRESHOLD
    assert vacuums("jobs", "done") == before + 1
    assert "jobs: vacuumed" in churned_log.text
    assert "autovacuum is off for" in churned_log.text

    plan = await claim_plan(pg)  # the VACUUM (ANALYZE) counted the backlog
    on_jobs = [n for n in plan_nodes(plan) if n.get("Relation Name") == "jobs"]
    # The pick (in claim order, stopping at its limit), then the update by primary key.
    assert [(n["Node Type"], n.get("Index Name")) for n in on_jobs] == [
        ("Index Scan", "idx_jobs_claim_order"),
        ("ModifyTable", None),
        ("Index Scan", "pk_jobs"),
    ]
    [pick] = [n for n in plan_nodes(plan) if n.get("Subplan Name") == "CTE picked"]
    assert "Sort" not in {n["Node Type"] for n in plan_nodes(pick)}  # not the backlog
    assert len(await store.claim(params(limit=100))) == 100


async def test_table_maintenance_warn_mode_warns_everywhere_and_vacuums_nothing(
    postgres_url: str, tmp_path: Path, churned_log: pytest.LogCaptureFixture
) -> None:
    settings = {"vacuum": "warn", "dead_tuples_threshold": THRESHOLD}
    async with serve_api(postgres_url, tmp_path, maintenance=settings) as api:
        store = api.runtime.store
        assert isinstance(api.runtime.db, PostgresDatabase)
        await sql(api.runtime.db, "ALTER TABLE jobs SET (autovacuum_enabled = false)")
        before = vacuums("jobs", "done")
        await churn(store, CHURNED)
        await dead_at_least(store, api.runtime.db, "jobs", 2 * THRESHOLD)

        assert await api.runtime.maintenance.run_once() == 0

        assert await dead_rows(store, "jobs") >= 2 * THRESHOLD
        assert vacuums("jobs", "done") == before
        assert "vacuum it (maintenance.vacuum is warn)" in churned_log.text
        ready = await api.client.get("/readyz")
        assert ready.status_code == 200
        warning = "jobs: dead row versions pile up (autovacuum is off)"
        assert ready.json() == {"status": "ok", "warnings": [warning]} or (
            warning in ready.json()["warnings"]
        )
        page = (await api.client.get("/metrics", headers=api.admin)).text
        assert 'taskmill_table_dead_tuples{table="jobs"}' in page
        assert 'taskmill_table_size_bytes{table="jobs"}' in page


async def test_table_maintenance_off_neither_warns_nor_vacuums(
    pg: PostgresDatabase, store: Store, churned_log: pytest.LogCaptureFixture
) -> None:
    await churn(store, CHURNED)
    await dead_at_least(store, pg, "jobs", 2 * THRESHOLD)
    off = maintenance(store, VacuumMode.OFF)

    assert await off.run_once() == 0
    assert await off.warnings() == []
    assert await dead_rows(store, "jobs") >= 2 * THRESHOLD
    assert "dead row versions" not in churned_log.text


async def test_table_maintenance_a_failing_vacuum_leaves_the_other_tables(
    pg: PostgresDatabase, store: Store, churned_log: pytest.LogCaptureFixture
) -> None:
    await churn(store, CHURNED)
    await dead_at_least(store, pg, "jobs", 2 * THRESHOLD)
    await dead_at_least(store, pg, "job_runs", THRESHOLD)
    failed = vacuums("jobs", "failed")
    auto = maintenance(store, VacuumMode.AUTO, vacuum_timeout_seconds=1)
    # A lock VACUUM waits for (as behind a long CREATE INDEX): its timeout gives up.
    async with pg.engine.connect() as holder:
        await holder.execute(text("LOCK TABLE jobs IN SHARE UPDATE EXCLUSIVE MODE"))

        vacuumed = await auto.run_once()

        await holder.rollback()
    assert vacuumed >= 1  # job_runs, after jobs failed
    assert await dead_rows(store, "job_runs") < THRESHOLD
    assert await dead_rows(store, "jobs") >= 2 * THRESHOLD
    assert vacuums("jobs", "failed") == failed + 1
    assert "jobs: VACUUM failed" in churned_log.text
    # The next round finds the lock gone, on pooled connections left as they were.
    assert await auto.run_once() >= 1
    assert await dead_rows(store, "jobs") < THRESHOLD
    rows = await sql(pg, "SELECT current_setting('statement_timeout')")
    assert rows == [("0",)]


async def test_table_maintenance_replicas_skip_a_table_another_is_vacuuming(
    pg: PostgresDatabase, store: Store
) -> None:
    await churn(store, CHURNED)
    await dead_at_least(store, pg, "jobs", 2 * THRESHOLD)
    skipped = vacuums("jobs", "skipped")
    lock = f"{VACUUM_LOCK_KEY}, 'jobs'::regclass::oid::int"
    async with pg.engine.connect() as other:  # another replica, mid-vacuum
        await other.execute(text(f"SELECT pg_advisory_lock({lock})"))
        assert await store.vacuum_table("jobs", timeout_seconds=5) is False
        await maintenance(store, VacuumMode.AUTO, tables=("jobs",)).run_once()
        await other.execute(text(f"SELECT pg_advisory_unlock({lock})"))
    assert vacuums("jobs", "skipped") == skipped + 1
    assert await dead_rows(store, "jobs") >= 2 * THRESHOLD
    assert await store.vacuum_table("jobs", timeout_seconds=5) is True


async def test_table_maintenance_throttles_its_vacuum_as_autovacuum_is(
    pg: PostgresDatabase, store: Store
) -> None:
    """The VACUUM taskmill runs sleeps between rounds of work (``VacuumDelay`` in
    ``pg_stat_activity``) instead of taking a core from the claims while it runs; its
    pooled connection goes back with the server's setting."""
    await churn(store, CHURNED)
    await dead_at_least(store, pg, "jobs", 2 * THRESHOLD)
    throttled = maintenance(store, VacuumMode.AUTO, tables=("jobs",), vacuum_cost_delay_ms=20)
    vacuuming = asyncio.ensure_future(throttled.run_once())
    waits: set[str] = set()
    while not vacuuming.done():
        waits |= {
            row[0]
            for row in await sql(
                pg,
                "SELECT wait_event FROM pg_stat_activity WHERE query LIKE 'VACUUM%'"
                " AND wait_event IS NOT NULL",
            )
        }
        await asyncio.sleep(0.005)
    assert await vacuuming == 1
    assert "VacuumDelay" in waits
    assert await dead_rows(store, "jobs") < THRESHOLD
    settings = await sql(
        pg,
        "SELECT DISTINCT setting FROM pg_settings, pg_stat_activity"
        " WHERE name = 'vacuum_cost_delay' AND pid = pg_backend_pid()",
    )
    assert settings == [("0",)]  # this server's default for a manual VACUUM


async def test_table_maintenance_vacuums_only_taskmill_tables(store: Store) -> None:
    with pytest.raises(ValueError, match="hot tables"):
        await store.vacuum_table('jobs"; DROP TABLE jobs; --', timeout_seconds=5)


async def test_table_maintenance_nothing_to_watch_on_sqlite(sqlite_url: str) -> None:
    db = Database.from_url(sqlite_url)
    try:
        store = store_for(db)
        assert await store.table_stats(HOT_TABLES) is None
        auto = maintenance(store, VacuumMode.AUTO)
        assert await auto.run_once() == 0
        assert await auto.warnings() == []
    finally:
        await db.close()


async def test_migration_0011_sets_and_resets_the_tables_storage_parameters(
    pg: PostgresDatabase,
) -> None:
    query = "SELECT relname, reloptions FROM pg_class WHERE relname IN ('jobs', 'workers')"
    options = dict(await sql(pg, query))
    assert "autovacuum_vacuum_scale_factor=0.01" in options["jobs"]
    assert "fillfactor=50" in options["workers"]

    await migrate.downgrade(pg, "0010")
    options = dict(await sql(pg, query))
    # Only the test's own setting is left (the pg fixture's).
    test_own = ["autovacuum_enabled=false"]
    assert options == {"jobs": test_own, "workers": test_own}
    indexes = {row[0] for row in await sql(pg, "SELECT indexname FROM pg_indexes")}
    assert "idx_jobs_status_queue_priority" in indexes
    assert "idx_jobs_claim_order" not in indexes

    await migrate.upgrade(pg)
    assert await migrate.is_current(pg)


async def test_table_maintenance_stop_cancels_a_vacuum_in_flight(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        database={"url": postgres_url},
        maintenance={"dead_tuples_threshold": 100},
        api={"secret_key_file": str(tmp_path / "secret")},
    )
    runtime = Runtime(settings, TaskRegistry())
    db = runtime.db
    assert isinstance(db, PostgresDatabase)
    try:
        await sql(db, "ALTER TABLE jobs SET (autovacuum_enabled = false)")
        await churn(runtime.store, 200)
        await dead_at_least(runtime.store, db, "jobs", 100)
        stop = asyncio.Event()
        async with db.engine.connect() as holder:  # VACUUM of jobs waits for this
            await holder.execute(text("LOCK TABLE jobs IN SHARE UPDATE EXCLUSIVE MODE"))
            maintaining = asyncio.create_task(runtime._maintaining(stop))

            async def vacuum_waits() -> bool:
                return bool(await sql(db, VACUUMING_JOBS))

            await wait_for(vacuum_waits, timeout=20)
            stop.set()
            await asyncio.wait_for(maintaining, 20)  # not the 600 s VACUUM timeout

            async def vacuum_gone() -> bool:  # the cancel request reaches the server
                return not await vacuum_waits()

            await wait_for(vacuum_gone, timeout=20)
            await holder.rollback()
        assert await runtime.store.vacuum_table("jobs", timeout_seconds=5) is True  # unlocked
    finally:
        await runtime.close()


VACUUMING_JOBS = (
    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'VACUUM (ANALYZE) \"jobs\"%' "
    "AND state = 'active' AND pid <> pg_backend_pid()"
)
