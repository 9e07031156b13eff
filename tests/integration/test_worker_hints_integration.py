"""A worker whose claim fails hands its hints back, on Redis and on RabbitMQ: left
unsettled, they would fill RabbitMQ's prefetch window and the worker would starve."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from taskmill.brokers.base import Broker, Message
from taskmill.brokers.rabbitmq import RabbitMQBroker
from taskmill.brokers.redis import RedisBroker
from taskmill.core.clock import SystemClock
from taskmill.core.errors import StoreError
from taskmill.executors.python import PythonExecutor, TaskDefinition, TaskRegistry
from taskmill.services.worker import Worker, WorkerConfig
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from tests import backends

# A database that does not exist: every claim fails as during an outage.
MISSING_DB = backends.POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/taskmill_no_such_database"

BrokerFactory = Callable[[str], Broker]


@pytest.fixture(params=["redis", "rabbitmq"])
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    redis = request.param == "redis"
    reason = await (backends.redis_reachable() if redis else backends.rabbitmq_reachable())
    if reason is not None:
        backends.unavailable(reason)
    made: list[Broker] = []

    def factory(consumer: str) -> Broker:
        broker: Broker
        if request.param == "redis":
            broker = RedisBroker(
                backends.REDIS_URL, prefix=prefix, consumer=consumer, reclaim_idle_seconds=60
            )
        else:
            broker = RabbitMQBroker(backends.AMQP_URL, prefix=prefix, timeout_seconds=5)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()
    if request.param == "redis":
        await backends.delete_prefix(prefix)
    else:
        await backends.delete_queues(prefix)


async def test_worker_hands_hints_back_when_its_claim_fails(make_broker: BrokerFactory) -> None:
    registry = TaskRegistry()
    registry.add(TaskDefinition("t", lambda ctx, payload: None))
    broker = make_broker("w1")
    db = Database.from_url(MISSING_DB, pool_size=1)
    worker = Worker(
        store_for(db),
        broker,
        PythonExecutor(registry, max_threads=1),
        SystemClock(),
        WorkerConfig(worker_id="w1", concurrency=2, poll_interval=2),
    )
    await broker.publish([Message("job-1", "default"), Message("job-2", "default")])
    try:
        with pytest.raises(StoreError):
            await worker._receive_and_claim(asyncio.Event(), more=False)
    finally:
        await db.close()
    # Another worker gets both hints at once: they were handed back, not left pending.
    other = make_broker("w2")
    got = await other.receive(["default"], 10, timeout=2)
    assert sorted(d.job_id or "" for d in got) == ["job-1", "job-2"]
    await other.ack(got)
