"""S18: poison jobs and poison messages, on real service processes with a supervisor that
restarts dead executors (PostgreSQL + Redis; SQLite with the database broker).

Pass (RELIABILITY.md): the job that ``os._exit(137)``s its worker ends ``failed`` with
``worker_lost`` after exactly 3 attempts; executor deaths <= 3; the 100 others all
succeed; on Redis, hints with garbage bytes, unknown ids or another tenant's id are
acked, crash nothing and execute nothing; I1-I5.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select

from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import tenants
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job, get_job
from taskmill.store.schema import jobs
from tests import backends
from tests.conftest import wait_for
from tests.e2e.cluster import REQUEUE, WATCHER, Cluster, cluster
from tests.fixtures.apps import build_app
from tests.history import check_history, create_effects_table, executions

pytestmark = pytest.mark.slow  # 20-30 s per backend: three lease expiries


@dataclass
class Backend:
    database_url: str
    broker_url: str

    @property
    def redis(self) -> bool:
        return self.broker_url.startswith("redis")


@pytest.fixture(params=["postgresql+redis", "postgresql+rabbitmq", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend(request.getfixturevalue("sqlite_url"), "database")
    if request.param == "postgresql+rabbitmq":
        request.getfixturevalue("rabbitmq_available")
        return Backend(request.getfixturevalue("postgres_url"), backends.AMQP_URL)
    request.getfixturevalue("redis_available")
    return Backend(request.getfixturevalue("postgres_url"), backends.REDIS_URL)


async def _succeeded(db: Database) -> int:
    async with db.read() as conn:
        stmt = select(func.count()).where(jobs.c.status == JobStatus.SUCCEEDED)
        return int((await conn.execute(stmt)).scalar_one())


async def _poison_messages(c: Cluster, db: Database) -> list[str]:
    """Publish junk hints straight into the deployment's Redis stream; return the ids of
    real jobs among them that must not run (another tenant's, not yet due)."""
    other = await tenants.create_merchant(db, "tenant B", now=datetime.now(UTC))
    later = datetime.now(UTC) + timedelta(hours=1)
    theirs = await create_job(
        db, NewJob("sleepy", later, payload={}, merchant_id=other.id), actor="b", now=later
    )
    client = aioredis.Redis.from_url(c.broker_url)
    try:
        stream = f"{c.prefix}:q:default:normal"
        for fields in (
            {"job_id": "not-a-job"},
            {"job_id": str(uuid.uuid4())},  # unknown id
            {"job_id": theirs.job.id},  # another tenant's job, not queued
            {"job_id": b"\xff\xfe\x00garbage"},  # not UTF-8
            {"garbage": b"\x00\x01\x02"},  # no job id at all
            {"job_id": ""},
        ):
            await client.xadd(stream, fields)  # type: ignore[arg-type]
    finally:
        await client.aclose()
    return [theirs.job.id]


async def _hints_left(c: Cluster) -> int:
    """Hints still in the deployment's streams (acked hints are deleted)."""
    client = aioredis.Redis.from_url(c.broker_url)
    try:
        total = 0
        async for key in client.scan_iter(match=f"{c.prefix}:q:*"):
            total += int(await client.xlen(key))
        return total
    finally:
        await client.aclose()


async def test_reliability_s18_poison_job_and_poison_messages(
    backend: Backend, tmp_path: Path
) -> None:
    """S18: a worker-killing job fails after 3 attempts; junk hints run nothing (junk on
    Redis here; on RabbitMQ: tests/integration/test_rabbitmq_poison_integration.py)."""
    db = Database.from_url(backend.database_url)
    await create_effects_table(db)
    producer = build_app(backend.database_url)
    try:
        normal = [j.id for j in await producer.schedule_many("sleepy", [{"seconds": 0.2}] * 100)]
        poison = (await producer.schedule("poison", {})).id
    finally:
        await producer.stop()
    deaths: list[int] = []
    untouchable: list[str] = []
    prefix = ""
    try:
        with cluster(backend.database_url, backend.broker_url, tmp_path) as c:
            prefix = c.prefix
            if backend.redis:
                untouchable = await _poison_messages(c, db)
            c.start("queue-populator")
            c.start("failure-watcher")
            executors = [c.start("executor", TASKMILL_WORKER__CONCURRENCY="10")]

            async def settled() -> bool:
                # The supervisor: restart every executor that died, count the deaths.
                for i, proc in enumerate(executors):
                    if proc.poll() is not None:
                        deaths.append(proc.pid)
                        assert len(deaths) <= 10, "executors keep dying: a crash loop"
                        executors[i] = c.start("executor", TASKMILL_WORKER__CONCURRENCY="10")
                job = await get_job(db, poison, ALL_MERCHANTS)
                return job.status is JobStatus.FAILED and await _succeeded(db) == 100

            await wait_for(settled, timeout=90, interval=0.2)
            if backend.redis:

                async def hints_gone() -> bool:
                    return await _hints_left(c) == 0

                await wait_for(hints_gone, timeout=15, interval=0.2)
            await asyncio.sleep(1)  # room for a late crash or a wrongly run job
            assert all(p.poll() is None for p in executors)
            logs = c.logs()
        failed = await get_job(db, poison, ALL_MERCHANTS)
        assert failed.last_error == "worker_lost" and failed.attempt == 3
        assert len(deaths) <= 3
        assert "Traceback" not in logs
        ran = await executions(db)
        per_job = Counter(job_id for job_id, _, _ in ran)
        assert per_job[poison] == 3
        assert set(normal) <= set(per_job)
        for job_id in untouchable:  # still waiting, never executed
            assert per_job[job_id] == 0
            assert (await get_job(db, job_id, ALL_MERCHANTS)).status is JobStatus.SCHEDULED
        hit = Counter(job_id for job_id, _, pid in ran if pid in deaths)
        await check_history(
            db, faults_per_job=hit, queued_grace_s=REQUEUE + WATCHER, running_grace_s=WATCHER
        )
        print(  # noqa: T201
            f"S18 {backend.broker_url}: {len(deaths)} executor deaths, "
            f"{sum(per_job.values()) - len(per_job)} re-executions"
        )
    finally:
        await db.close()
        if backend.redis and prefix:
            await backends.delete_prefix(prefix)
        elif backend.broker_url.startswith("amqp") and prefix:
            await backends.delete_queues(prefix)
