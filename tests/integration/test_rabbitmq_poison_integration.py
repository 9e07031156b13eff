"""S18's poison messages on RabbitMQ: a worker on PostgreSQL + RabbitMQ, in one process,
fed hints with garbage bytes, unknown ids, another tenant's id and over-long ids.

Pass (RELIABILITY.md S18): every such message is acked and logged, nothing crashes or
stalls, nothing runs but the real jobs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from taskmill import TaskContext, Taskmill
from taskmill.brokers.rabbitmq import QUEUE_ARGUMENTS
from taskmill.config import load_settings
from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import tenants
from taskmill.store.jobs import NewJob, create_job, get_job
from tests import backends
from tests.conftest import wait_for

CONCURRENCY = 2  # fewer slots than junk messages: unacked junk would fill the prefetch


@pytest.fixture
async def app(postgres_url: str) -> AsyncIterator[Taskmill]:
    reason = await backends.rabbitmq_reachable()
    if reason is not None:
        backends.unavailable(reason)
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        "test",
        None,
        database={"url": postgres_url},
        broker={"url": backends.AMQP_URL, "prefix": prefix, "timeout_seconds": 5},
        worker={"lease_seconds": 3.0, "heartbeat_seconds": 0.5, "concurrency": CONCURRENCY},
        scheduler={
            "poll_interval_seconds": 0.2,
            "watcher_interval_seconds": 0.2,
            # Far beyond the test: the real jobs must run from their own hints, not from
            # the watcher re-publishing jobs whose hints a clogged worker never received.
            "requeue_after_seconds": 600.0,
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
    await backends.delete_queues(prefix)


async def _publish_raw(queue: str, bodies: list[bytes]) -> None:
    """Put ``bodies`` in taskmill's queue (declared as taskmill declares it) from another
    connection, as any client with write access could."""
    connection = await aio_pika.connect(backends.AMQP_URL, timeout=5)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments=dict(QUEUE_ARGUMENTS))
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)
    finally:
        await connection.close()


async def test_rabbitmq_poison_messages_are_acked_and_run_nothing(
    app: Taskmill, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runtime = await app.open()
    db = runtime.db
    other = await tenants.create_merchant(db, "tenant B", now=datetime.now(UTC))
    later = datetime.now(UTC) + timedelta(hours=1)
    theirs = await create_job(
        db, NewJob("count", later, payload={}, merchant_id=other.id), actor="b", now=later
    )
    queue = f"{runtime.settings.broker.prefix}.default"
    malformed = [b"\xff\xfe\x00garbage", b"with\x00nul", b"", b"x" * 37, b"\x1b[2J", b"a\nb"]
    stale = [b"not-a-job", str(uuid.uuid4()).encode(), theirs.job.id.encode(), b"' OR 1=1--"]
    await _publish_raw(queue, malformed + stale)
    await app.start()
    real = [await app.schedule("count", i) for i in range(5)]

    async def all_done() -> bool:
        done = await app.list(JobFilter(statuses=[JobStatus.SUCCEEDED], limit=100))
        return len(done) == len(real)

    await wait_for(all_done, timeout=15)

    async def queue_empty() -> bool:
        return (await backends.rabbitmq_queue_state(queue))[0] == 0

    await wait_for(queue_empty, timeout=10)
    runs: list[str] = app.runs_seen  # type: ignore[attr-defined]
    assert sorted(runs) == sorted(j.id for j in real if isinstance(j, Job))  # once each
    assert (await get_job(db, theirs.job.id, ALL_MERCHANTS)).status is JobStatus.SCHEDULED
    assert caplog.text.count("dropping a malformed hint") == len(malformed)
    assert "claim failed" not in caplog.text and "Traceback" not in caplog.text
    # The worker is still receiving: one more job runs from its hint at once.
    late = await app.schedule("count", "late")

    async def late_done() -> bool:
        return (await app.get(late.id)).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]

    await wait_for(late_done, timeout=5)
