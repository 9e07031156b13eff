"""PostgreSQL + Redis in one process: hints flow through Redis, the database stays the
truth (a flushed Redis loses no job, garbage hints run nothing)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.brokers.base import Message
from taskmill.brokers.redis import RedisBroker
from taskmill.config import load_settings
from taskmill.core.jobs import Job, JobFilter, JobStatus
from tests import backends
from tests.conftest import wait_for


@pytest.fixture
async def app(postgres_url: str, redis_available: None) -> AsyncIterator[Taskmill]:
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        "test",
        None,
        database={"url": postgres_url},
        broker={"url": backends.REDIS_URL, "prefix": prefix, "reclaim_idle_seconds": 1.0},
        worker={"lease_seconds": 3.0, "heartbeat_seconds": 0.5, "concurrency": 20},
        scheduler={
            "poll_interval_seconds": 0.2,
            "watcher_interval_seconds": 0.2,
            "requeue_after_seconds": 1.0,
        },
        retry={"base_seconds": 0.0, "jitter": 0.0},
    )
    application = Taskmill(settings=settings)
    runs: list[str] = []

    @application.task("count")
    async def count(ctx: TaskContext, payload: Any) -> None:
        runs.append(ctx.job_id)

    application.runs_seen = runs  # type: ignore[attr-defined]
    yield application
    await application.stop()
    await backends.delete_prefix(prefix)


async def _all_succeeded(app: Taskmill, n: int) -> bool:
    done = await app.list(JobFilter(statuses=[JobStatus.SUCCEEDED], limit=10_000))
    return len(done) == n


async def _run_with_a_worker_only(app: Taskmill, n: int) -> None:
    """Serve ``app`` with its executor alone until ``n`` jobs succeeded."""
    stop = asyncio.Event()
    worker_only = asyncio.create_task(app.serve(stop, lambda rt: rt.services({"executor"})))
    try:
        await wait_for(lambda: _all_succeeded(app, n), timeout=30)
    finally:
        stop.set()
        await worker_only


async def test_production_integration_jobs_flow_through_redis(app: Taskmill) -> None:
    await app.start()
    jobs = [await app.schedule("count", i) for i in range(200)]
    await wait_for(lambda: _all_succeeded(app, 200), timeout=30)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert sorted(runs) == sorted(j.id for j in jobs)  # each exactly once


async def test_production_integration_lost_hints_are_republished(app: Taskmill) -> None:
    runtime = await app.open()
    broker = runtime.broker
    assert isinstance(broker, RedisBroker)
    jobs = [await app.schedule("count", i) for i in range(50)]  # queued and hinted
    assert {j.status for j in jobs if isinstance(j, Job)} == {JobStatus.QUEUED}
    await backends.delete_prefix(broker.prefix)  # Redis flushed: every hint is gone
    await app.start()
    await wait_for(lambda: _all_succeeded(app, 50), timeout=30)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert sorted(runs) == sorted(j.id for j in jobs)


async def test_production_integration_garbage_hints_run_nothing(app: Taskmill) -> None:
    runtime = await app.open()
    real = await app.schedule("count", "real")
    assert isinstance(real, Job)
    other_tenant_like = str(uuid.uuid4())
    await runtime.broker.publish(
        [Message("not-a-job", "default"), Message(other_tenant_like, "default")]
    )
    await app.start()
    await wait_for(lambda: _all_succeeded(app, 1), timeout=30)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert runs == [real.id]


async def test_production_integration_an_immediate_job_needs_no_populator(app: Taskmill) -> None:
    """Created ``queued`` and announced by ``schedule()`` itself: a worker alone (no
    populator, no failure watcher) runs it."""
    runtime = await app.open()
    jobs = [await app.schedule("count", i) for i in range(20)]
    assert {j.status for j in jobs if isinstance(j, Job)} == {JobStatus.QUEUED}
    await _run_with_a_worker_only(app, 20)
    assert "queue-populator" in runtime.services()  # the name excluded above is real
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert sorted(runs) == sorted(j.id for j in jobs)


async def test_production_integration_a_producer_that_stops_at_once_announced_its_jobs(
    app: Taskmill, postgres_url: str
) -> None:
    """``schedule()`` returns at the commit and the hint follows from a task of its own;
    ``stop()`` waits for it. A worker alone (no populator, no failure watcher to publish
    a missed hint) runs every job a producer made just before it stopped."""
    runtime = await app.open()
    assert isinstance(runtime.broker, RedisBroker)
    producer = _producer(postgres_url, {"url": backends.REDIS_URL, "prefix": runtime.broker.prefix})
    try:
        jobs = [await producer.schedule("count", i) for i in range(30)]
    finally:
        await producer.stop()
    assert {j.status for j in jobs if isinstance(j, Job)} == {JobStatus.QUEUED}
    await _run_with_a_worker_only(app, 30)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert sorted(runs) == sorted(j.id for j in jobs)


def _producer(database_url: str, broker: dict[str, str]) -> Taskmill:
    """A process that only schedules ``count`` jobs, with its own broker settings."""
    producer = Taskmill(
        settings=load_settings("test", None, database={"url": database_url}, broker=broker)
    )
    producer.task("count")(lambda ctx, payload: None)
    return producer


async def test_production_integration_a_job_whose_hint_failed_still_runs(
    app: Taskmill, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer that cannot reach the broker still stores the job (``queued``, a
    warning logged): the failure watcher announces it once it waited too long."""
    unreachable = {"url": "redis://127.0.0.1:1/0", "prefix": "taskmill-test-unreachable"}
    producer = _producer(postgres_url, unreachable)
    try:
        job = await producer.schedule("count", "lonely")
    finally:
        await producer.stop()
    assert isinstance(job, Job) and job.status is JobStatus.QUEUED
    assert "1 queued jobs not announced (the failure watcher will)" in caplog.text
    await app.start()  # requeue_after_seconds is 1 s here
    await wait_for(lambda: _all_succeeded(app, 1), timeout=30)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert runs == [job.id]


@pytest.mark.parametrize(
    ("broker_url", "status"),
    [
        (backends.REDIS_URL, JobStatus.QUEUED),  # announced by schedule() itself
        (backends.AMQP_URL, JobStatus.SCHEDULED),  # a confirm per job: the populator batches
        ("database", JobStatus.SCHEDULED),  # the workers might read another broker
    ],
)
async def test_production_integration_which_producers_queue_their_own_jobs(
    postgres_url: str,
    redis_available: None,
    rabbitmq_available: None,
    broker_url: str,
    status: JobStatus,
) -> None:
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    producer = _producer(postgres_url, {"url": broker_url, "prefix": prefix})
    try:
        job = await producer.schedule("count", "now")
    finally:
        await producer.stop()
        await backends.delete_prefix(prefix)
    assert isinstance(job, Job) and job.status is status
