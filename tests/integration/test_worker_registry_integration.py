"""The worker registry: registration, heartbeats, dead workers and the rescue of their jobs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, text, update

from taskmill import Taskmill
from taskmill.brokers.database import DatabaseBroker
from taskmill.config import load_settings
from taskmill.core.errors import ConfigError
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import JobStatus, RunOutcome
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.failure_watcher import FailureWatcher, FailureWatcherConfig
from taskmill.store import claims, runs, workers
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.events import list_events
from taskmill.store.jobs import NewJob, create_job, get_job
from taskmill.store.replay import projection_diff
from taskmill.store.schema import workers as workers_table
from tests.conftest import wait_for
from tests.history import check_invariants

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LONG_LEASE = 3600.0  # so only the registry, never the lease, can explain a rescue


async def _running_job(db: Database, worker: str, max_attempts: int = 3) -> str:
    created = await create_job(
        db, NewJob("t", NOW, max_attempts=max_attempts), actor="test", now=NOW
    )
    await claims.enqueue_due(db, now=NOW, limit=10, actor="test")
    [job] = await claims.claim(
        db,
        claims.ClaimParams(
            worker_id=worker,
            limit=1,
            lease_seconds=LONG_LEASE,
            queues=["default"],
            task_types=["t"],
        ),
    )
    assert job.id == created.job.id
    return job.id


async def _silence(db: Database, worker_id: str, seconds: float) -> None:
    """Pretend ``worker_id`` last spoke ``seconds`` ago (on the database clock)."""
    async with db.transaction() as conn:
        await conn.execute(
            update(workers_table)
            .where(workers_table.c.id == worker_id)
            .values(heartbeat_at=db.dialect.db_now(-seconds))
        )


def _watcher(db: Database) -> FailureWatcher:
    return FailureWatcher(
        store_for(db), DatabaseBroker(), FailureWatcherConfig(worker_dead_after_seconds=10)
    )


async def test_registry_records_a_worker_and_its_restart(db: Database) -> None:
    await workers.register(db, "w1", "host-a", 100, ["default"], 4)
    await workers.stop(db, "w1")
    # A configured worker_id comes back after a restart: the row is taken over.
    await workers.register(db, "w1", "host-b", 200, ["default", "mail"], 8)
    [info] = await workers.list_workers(db)
    assert (info.hostname, info.pid, info.queues, info.concurrency) == (
        "host-b",
        200,
        ["default", "mail"],
        8,
    )
    assert info.status is workers.WorkerStatus.ALIVE and info.stopped_at is None


async def test_silent_worker_is_marked_dead_and_its_jobs_rescued_at_once(db: Database) -> None:
    await workers.register(db, "w-dead", "host", 1, ["default"], 4)
    await workers.register(db, "w-alive", "host", 2, ["default"], 4)
    lost = await _running_job(db, "w-dead")
    kept = await _running_job(db, "w-alive")
    await _silence(db, "w-dead", 60)

    await _watcher(db).run_once()

    statuses = {w.id: w.status for w in await workers.list_workers(db)}
    assert statuses == {"w-dead": workers.WorkerStatus.DEAD, "w-alive": workers.WorkerStatus.ALIVE}
    rescued = await get_job(db, lost, ALL_MERCHANTS)
    assert rescued.status is JobStatus.SCHEDULED and rescued.worker_id is None
    assert rescued.last_error == claims.WORKER_LOST
    assert (await get_job(db, kept, ALL_MERCHANTS)).status is JobStatus.RUNNING
    [run] = await runs.list_runs(db, lost, ALL_MERCHANTS)
    assert run.outcome is RunOutcome.LOST
    types = [e.type for e in await list_events(db, ALL_MERCHANTS, EventFilter(job_id=lost))]
    assert types[-1] is EventType.JOB_LEASE_EXPIRED
    assert await projection_diff(db) == []
    await check_invariants(db)


async def test_dead_worker_on_the_last_attempt_fails_the_job(db: Database) -> None:
    await workers.register(db, "w-dead", "host", 1, ["default"], 4)
    job_id = await _running_job(db, "w-dead", max_attempts=1)
    await _silence(db, "w-dead", 60)
    await _watcher(db).run_once()
    failed = await get_job(db, job_id, ALL_MERCHANTS)
    assert failed.status is JobStatus.FAILED and failed.last_error == claims.WORKER_LOST
    await check_invariants(db)


async def test_a_dead_worker_that_speaks_again_is_fenced_off_its_old_jobs(db: Database) -> None:
    await workers.register(db, "w-paused", "host", 1, ["default"], 4)
    job_id = await _running_job(db, "w-paused")
    await _silence(db, "w-paused", 60)
    await _watcher(db).run_once()

    await workers.beat(db, "w-paused")  # resumed after the pause

    [info] = await workers.list_workers(db)
    assert info.status is workers.WorkerStatus.ALIVE
    # Its lease on the rescued job is gone: the heartbeat tells the worker to stop it.
    assert await claims.renew_leases(db, "w-paused", [(job_id, 1)], 30) == set()
    # Alive again, it is not rescued a second time on the next round.
    next_job = await _running_job(db, "w-paused")
    await _watcher(db).run_once()
    assert (await get_job(db, next_job, ALL_MERCHANTS)).status is JobStatus.RUNNING
    await check_invariants(db)


async def test_a_stopped_worker_is_not_marked_dead(db: Database) -> None:
    await workers.register(db, "w-stopped", "host", 1, ["default"], 4)
    await workers.stop(db, "w-stopped")
    await _silence(db, "w-stopped", 600)
    assert await workers.mark_dead(db, 10) == []
    async with db.read() as conn:
        status = (await conn.execute(text("SELECT status FROM workers"))).scalar_one()
    assert status == "stopped"


def test_dead_after_must_exceed_the_heartbeat() -> None:
    with pytest.raises(ConfigError, match="worker_dead_after_seconds"):
        load_settings(scheduler={"worker_dead_after_seconds": 5}, worker={"heartbeat_seconds": 10})


async def test_a_worker_whose_row_was_pruned_registers_again(database_url: str) -> None:
    """Retention prunes the rows of workers gone for long (ADR 0009); a worker that was
    only silent (a suspended machine) and beats again is listed again, alive."""
    app = Taskmill(
        settings=load_settings(
            "test",
            None,
            database={"url": database_url},
            worker={"lease_seconds": 5.0, "heartbeat_seconds": 0.2},
        )
    )
    runtime = await app.open()
    await app.start()
    try:

        async def listed() -> bool:
            return any(w.status is workers.WorkerStatus.ALIVE for w in await _listed(runtime.db))

        await wait_for(listed)
        async with runtime.db.transaction() as conn:
            await conn.execute(delete(workers_table))  # what the pruner does
        assert await _listed(runtime.db) == []
        await wait_for(listed)
    finally:
        await app.stop()


async def _listed(db: Database) -> list[workers.WorkerInfo]:
    return await workers.list_workers(db)
