"""S11: two (and four) queue populators started together over one backlog, each with its
own connections, and two workers draining it (SQLite: 2 populators; PostgreSQL: 2 and 4).

Pass (RELIABILITY.md): exactly one ``job.queued`` event per job per attempt; no job
claimed twice (one run and one execution per ``(job_id, attempt)``); all succeed; I1-I5.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from taskmill.brokers.database import DatabaseBroker
from taskmill.core.clock import SystemClock
from taskmill.core.jobs import JobStatus
from taskmill.executors.python import PythonExecutor
from taskmill.services.queue_populator import QueuePopulator, QueuePopulatorConfig
from taskmill.services.worker import Worker, WorkerConfig
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_jobs
from taskmill.store.schema import events, job_runs, jobs
from tests.conftest import wait_for
from tests.fixtures.apps import build_app, close_effect_pools
from tests.history import check_history, create_effects_table, executions

JOBS = int(os.environ.get("TASKMILL_TEST_S11_JOBS", "5000"))
# Minutes of work, no timing bound but the 300 s drain: niced beside the serial step.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(330), pytest.mark.beside_serial]
PAST = datetime(2026, 1, 1, tzinfo=UTC)


async def _count(db: Database, status: JobStatus) -> int:
    async with db.read() as conn:
        stmt = select(func.count()).select_from(jobs).where(jobs.c.status == status)
        return int((await conn.execute(stmt)).scalar_one())


async def _populate(populator: QueuePopulator, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if await populator.run_once() == 0:
            await asyncio.sleep(0.01)


async def _work(worker: Worker, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if await worker.run_once() == 0:
            await asyncio.sleep(0.01)
    await worker.drain()


async def _run_s11(url: str, populators: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMILL_DATABASE__URL", url)  # record_effect's side table
    db = Database.from_url(url)
    registry = build_app(url).registry
    databases = [Database.from_url(url) for _ in range(populators + 2)]
    stop = asyncio.Event()
    try:
        await create_effects_table(db)
        for start in range(0, JOBS, 1000):
            batch = [NewJob("record_effect", PAST) for _ in range(min(1000, JOBS - start))]
            await create_jobs(db, batch, actor="producer", now=PAST)
        clock = SystemClock()
        config = QueuePopulatorConfig(batch_size=100)
        services = [
            _populate(QueuePopulator(store_for(d), DatabaseBroker(), clock, config), stop)
            for d in databases[:populators]
        ]
        services += [
            _work(
                Worker(
                    store_for(d),
                    DatabaseBroker(),
                    PythonExecutor(registry, max_threads=4),
                    clock,
                    WorkerConfig(worker_id=f"w{i}", concurrency=50),
                ),
                stop,
            )
            for i, d in enumerate(databases[populators:])
        ]
        running = asyncio.gather(*services)  # all started together
        try:

            async def all_succeeded() -> bool:
                return await _count(db, JobStatus.SUCCEEDED) == JOBS

            await wait_for(all_succeeded, timeout=300, interval=0.2)
        finally:
            stop.set()
            await running
        async with db.read() as conn:
            queued = Counter(
                row.job_id
                for row in await conn.execute(
                    select(events.c.job_id).where(events.c.type == "job.queued")
                )
            )
            run_rows = (await conn.execute(select(func.count()).select_from(job_runs))).scalar()
        assert len(queued) == JOBS and set(queued.values()) == {1}  # one per job per attempt
        assert run_rows == JOBS  # one claim per job
        done = Counter(job_id for job_id, _, _ in await executions(db))
        assert len(done) == JOBS and set(done.values()) == {1}  # executed exactly once
        await check_history(db, queued_grace_s=5.0, running_grace_s=1.0)
    finally:
        await close_effect_pools()
        for d in [db, *databases]:
            await d.close()


async def test_reliability_s11_two_populators(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S11 (SQLite and PostgreSQL): two populators, 5,000 due jobs."""
    await _run_s11(database_url, 2, monkeypatch)


async def test_reliability_s11_four_populators(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S11 (PostgreSQL): four populators, 5,000 due jobs."""
    await _run_s11(postgres_url, 4, monkeypatch)
