"""Faults on the real services (PostgreSQL + Redis, separate processes): the pass
criteria of the production issue and RELIABILITY.md S2, S8 and S11 (S1 and S4, on both
brokers: ``test_reliability_faults.py``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill.core.jobs import JobStatus
from taskmill.store.database import Database
from taskmill.store.replay import projection_diff
from taskmill.store.schema import events, job_runs, jobs
from tests import backends
from tests.conftest import wait_for
from tests.e2e.cluster import LEASE, REQUEUE, WATCHER, Cluster, cluster, effects
from tests.fixtures.apps import build_app
from tests.history import check_history, create_effects_table


async def _check_history(db: Database, faults_per_job: Mapping[str, int] | None = None) -> None:
    """I1-I5, with the cluster's Q + W in queued and W past a lease as grace (I1)."""
    await check_history(
        db,
        faults_per_job=faults_per_job,
        queued_grace_s=REQUEUE + WATCHER,
        running_grace_s=WATCHER,
    )


pytestmark = pytest.mark.slow


@pytest.fixture
async def db(postgres_url: str, redis_available: None) -> AsyncIterator[Database]:
    database = Database.from_url(postgres_url)
    await create_effects_table(database)  # record_effect counts executions there too (I5)
    yield database
    await database.close()


async def _enqueue(url: str, count: int, payload: dict[str, Any]) -> list[str]:
    producer = build_app(url)
    try:
        ids: list[str] = []
        for start in range(0, count, 1000):
            batch = [payload] * min(1000, count - start)
            ids += [job.id for job in await producer.schedule_many("sleepy", batch)]
        return ids
    finally:
        await producer.stop()


async def _statuses(db: Database) -> Counter[str]:
    async with db.read() as conn:
        rows = (
            await conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
        ).all()
    return Counter({JobStatus(s).value: n for s, n in rows})


async def _succeeded(db: Database, n: int) -> bool:
    return (await _statuses(db))["succeeded"] == n


async def _event_counts(db: Database, kind: str) -> Counter[str]:
    async with db.read() as conn:
        stmt = select(events.c.job_id).where(events.c.type == kind)
        return Counter(row.job_id for row in (await conn.execute(stmt)).all())


async def test_faults_paused_executor_is_fenced(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    """S2 (on Redis and RabbitMQ): a paused executor's late writes change nothing."""
    log = tmp_path / "effects.log"
    # Long enough to stop the executor mid-job (the test sees its effect line within a
    # poll), short enough not to pace the test.
    seconds = 4
    [job_id] = await _enqueue(postgres_url, 1, {"effects": str(log), "seconds": seconds})
    c = services
    c.start("queue-populator")
    c.start("failure-watcher")
    zombie = c.start("executor")

    async def started() -> bool:
        return len(effects(log)) == 1

    await wait_for(started, timeout=30)
    zombie.send_signal(signal.SIGSTOP)
    c.start("executor")
    await wait_for(lambda: _succeeded(db, 1), timeout=LEASE + WATCHER + seconds + 30)
    async with db.read() as conn:
        before = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()
    zombie.send_signal(signal.SIGCONT)  # it wakes up, still "running" attempt 1
    await asyncio.sleep(LEASE)  # its heartbeat and its late outcome write both run
    async with db.read() as conn:
        after = (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()
        attempts = (
            await conn.execute(
                select(job_runs.c.attempt, job_runs.c.outcome)
                .where(job_runs.c.job_id == job_id)
                .order_by(job_runs.c.attempt)
            )
        ).all()
    assert before == after and after.attempt == 2 and after.status == JobStatus.SUCCEEDED
    assert [(a, o) for a, o in attempts] == [(1, "lost"), (2, "succeeded")]
    assert (await _event_counts(db, "job.succeeded"))[job_id] == 1
    assert "lost lease" in c.logs()
    await _check_history(db, {job_id: 1})


# 80-120 s on two cores: each execution's effect row opens a connection of its own.
@pytest.mark.timeout(330)
async def test_faults_three_replicas_of_every_service(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    """Three replicas of every service on one database and broker (Redis, RabbitMQ)."""
    log = tmp_path / "effects.log"
    count = 5000  # the production issue's pass criterion
    ids = await _enqueue(postgres_url, count, {"effects": str(log)})
    c = services
    for _ in range(3):
        for service in ("queue-populator", "failure-watcher", "recurrence-manager"):
            c.start(service)
        c.start("executor", TASKMILL_WORKER__CONCURRENCY="30")
    await wait_for(lambda: _succeeded(db, count), timeout=240)
    assert set((await _event_counts(db, "job.queued")).values()) == {1}
    assert set((await _event_counts(db, "job.succeeded")).values()) == {1}
    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == set(ids) and set(runs.values()) == {1}
    assert await projection_diff(db) == []
    await _check_history(db)


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def _pg_cluster(action: str) -> None:
    version = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True).stdout
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version.split()[0], "main", action],
        check=True,
        timeout=120,
    )


@pytest.mark.exclusive  # stops the machine's PostgreSQL: no other test may run meanwhile
async def test_faults_postgres_restart_mid_run(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    """S8 (on Redis and RabbitMQ): PostgreSQL restarts mid-run; nobody exits; the API
    says not ready (503) during the outage, stays healthy, and is ready again within 5 s."""
    import httpx

    from tests.e2e.test_cli import free_port

    log = tmp_path / "effects.log"
    count = 300
    ids = await _enqueue(postgres_url, count, {"effects": str(log), "seconds": 0.2})
    c = services
    port = free_port()
    procs = [
        c.start("queue-populator"),
        c.start("failure-watcher"),
        c.start("executor", TASKMILL_WORKER__CONCURRENCY="20"),
        c.start("api", TASKMILL_API__PORT=str(port)),
    ]
    base = f"http://127.0.0.1:{port}"

    async def some_done() -> bool:
        return len(effects(log)) >= 50

    async def status(client: httpx.AsyncClient, path: str) -> int:
        try:
            return (await client.get(base + path, timeout=3)).status_code
        except httpx.HTTPError:
            return 0

    async with httpx.AsyncClient() as client:
        await wait_for(some_done, timeout=60)
        await wait_for(lambda: _is(status(client, "/readyz"), 200), timeout=30)
        await db.engine.dispose()
        _pg_cluster("stop")
        during = (await status(client, "/readyz"), await status(client, "/healthz"))
        await asyncio.sleep(3)
        _pg_cluster("start")
        back = (await _statuses(db))["succeeded"]

        async def progressing() -> bool:
            return (await _statuses(db))["succeeded"] > back

        # Services reconnect by themselves: work resumes within 5 s of the database.
        await wait_for(progressing, timeout=5)
        await wait_for(lambda: _is(status(client, "/readyz"), 200), timeout=5)
    assert during == (503, 200)
    await wait_for(lambda: _succeeded(db, count), timeout=90)
    assert all(p.poll() is None for p in procs)  # nobody exited or crash-looped
    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == set(ids)
    # The restart is one fault; it can cost each job in flight one more execution.
    await _check_history(db, dict.fromkeys(ids, 1))


@pytest.mark.parametrize("broker", ["database", "redis"])
async def test_notify_wakes_other_processes_before_the_poll(
    postgres_url: str, db: Database, tmp_path: Path, broker: str
) -> None:
    log = tmp_path / "effects.log"
    with cluster(postgres_url, backends.REDIS_URL, tmp_path) as c:
        slow_poll = {"TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS": "30"}
        if broker == "database":
            slow_poll["TASKMILL_BROKER__URL"] = "database"
        c.start("queue-populator", **slow_poll)
        c.start("executor", **slow_poll)
        await asyncio.sleep(3)  # both are listening
        started = time.monotonic()
        await _enqueue(postgres_url, 1, {"effects": str(log)})
        await wait_for(lambda: _succeeded(db, 1), timeout=10)
        # Far inside the 30 s poll: the LISTEN/NOTIFY wake-up did it.
        assert time.monotonic() - started < 5
    await _check_history(db)


async def test_executor_process_serves_its_own_metrics(
    postgres_url: str, db: Database, tmp_path: Path
) -> None:
    import httpx

    from tests.e2e.test_cli import free_port

    log = tmp_path / "effects.log"
    port = free_port()
    with cluster(postgres_url, backends.REDIS_URL, tmp_path) as c:
        c.start("queue-populator")
        c.start("executor", TASKMILL_METRICS__PORT=str(port))
        await _enqueue(postgres_url, 5, {"effects": str(log)})
        await wait_for(lambda: _succeeded(db, 5), timeout=30)
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    name = "taskmill_jobs_started_total"
    started = [line for line in body.splitlines() if line.startswith(name)]
    assert started and sum(float(line.rsplit(" ", 1)[1]) for line in started) == 5
    await _check_history(db)
