"""The broker contract, run on every implementation: the database broker, Redis and
RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from taskmill.brokers.base import Broker, Delivery, Message
from taskmill.brokers.database import DatabaseBroker
from taskmill.brokers.rabbitmq import RabbitMQBroker
from taskmill.brokers.redis import RedisBroker
from tests import backends

BrokerFactory = Callable[[str], Broker]  # consumer name -> broker
QUEUES = ("default", "reports")  # every queue name these tests use


def _new_broker(kind: str, prefix: str, consumer: str) -> Broker:
    if kind == "redis":
        return RedisBroker(
            backends.REDIS_URL, prefix=prefix, consumer=consumer, reclaim_idle_seconds=0.5
        )
    return RabbitMQBroker(backends.AMQP_URL, prefix=prefix, timeout_seconds=5)


@asynccontextmanager
async def _brokers(kind: str) -> AsyncIterator[BrokerFactory]:
    """Brokers of ``kind`` sharing one test prefix; their keys or queues go afterwards."""
    reachable = backends.redis_reachable if kind == "redis" else backends.rabbitmq_reachable
    reason = await reachable()
    if reason is not None:
        backends.unavailable(reason)
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    made: list[Broker] = []

    def factory(consumer: str) -> Broker:
        broker = _new_broker(kind, prefix, consumer)
        made.append(broker)
        return broker

    try:
        yield factory
    finally:
        for broker in made:
            await broker.close()
        if kind == "redis":
            await backends.delete_prefix(prefix)
        else:
            await backends.delete_queues(prefix, QUEUES)


@pytest.fixture(params=["database", "redis", "rabbitmq"])
async def make_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    if request.param == "database":
        shared = DatabaseBroker()  # one process: publishers and receivers share its wake-up
        yield lambda consumer: shared
        return
    async with _brokers(request.param) as factory:
        yield factory


async def test_broker_integration_receive_times_out_empty(make_broker: BrokerFactory) -> None:
    broker = make_broker("w1")
    started = time.monotonic()
    assert await broker.receive(["default"], 10, timeout=0.2) == []
    assert 0.15 <= time.monotonic() - started < 2


async def test_broker_integration_publish_wakes_a_waiting_receiver(
    make_broker: BrokerFactory,
) -> None:
    producer, consumer = make_broker("producer"), make_broker("w1")
    waiting = asyncio.create_task(consumer.receive(["default"], 10, timeout=5))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await producer.publish([Message("job-1", "default"), Message("job-2", "default")])
    got = await waiting
    assert got and time.monotonic() - started < 1
    if consumer.carries_ids:
        # A blocked reader wakes on the first hint; the rest are there at once.
        got += await consumer.receive(["default"], 10, timeout=0.5)
        assert sorted(d.job_id or "" for d in got) == ["job-1", "job-2"]
    else:
        assert all(d.job_id is None for d in got)


async def test_broker_integration_acked_hints_are_not_redelivered(
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker("w1")
    await broker.publish([Message("job-1", "default")])
    got = await broker.receive(["default"], 10, timeout=1)
    await broker.ack(got)
    await broker.ack(got)  # idempotent
    assert await broker.receive(["default"], 10, timeout=0.2) == []


async def test_broker_integration_hints_acked_before_close_go_to_no_one(
    make_broker: BrokerFactory,
) -> None:
    """Acks may travel lazily (Redis sends them with the next read), but ``close`` sends
    what is left: another worker, even one reclaiming abandoned hints, gets none back."""
    first, second = make_broker("w1"), make_broker("w2")
    await first.publish([Message("job-1", "default"), Message("job-2", "default")])
    got = await first.receive(["default"], 10, timeout=1)
    assert len(got) >= 1
    await first.ack(got)
    await first.close()
    await asyncio.sleep(0.6)  # past the Redis brokers' reclaim_idle_seconds
    left = [d.job_id or "" for d in await second.receive(["default"], 10, timeout=0.3)]
    if first.carries_ids:
        assert sorted(left) == sorted({"job-1", "job-2"} - {d.job_id or "" for d in got})


async def test_broker_integration_acks_arrive_without_another_read(
    make_broker: BrokerFactory,
) -> None:
    """A worker whose slots are all busy reads nothing more for a long while: its acks
    must still arrive, or another worker would reclaim those hints as abandoned."""
    first, second = make_broker("w1"), make_broker("w2")
    await first.publish([Message("job-1", "default")])
    got = await first.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in got] in (["job-1"], [None])
    await first.ack(got)
    await asyncio.sleep(0.6)  # no read by ``first``; past Redis's reclaim_idle_seconds
    assert await second.receive(["default"], 10, timeout=0.3) == []


async def test_broker_integration_close_ends_receive(make_broker: BrokerFactory) -> None:
    broker = make_broker("w1")
    await broker.close()
    if broker.carries_ids:
        return  # a closed Redis client raises on use; the worker never receives after close
    assert await broker.receive(["default"], 10, timeout=1) == []


# Hints that carry ids: the rest of the contract.


@pytest.fixture(params=["redis", "rabbitmq"])
async def id_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    """Brokers whose hints carry job ids, sharing one test prefix."""
    async with _brokers(request.param) as factory:
        yield factory


@pytest.fixture
async def redis_only() -> AsyncIterator[BrokerFactory]:
    """Redis brokers sharing one test prefix (behaviours only Redis has)."""
    async with _brokers("redis") as factory:
        yield factory


async def test_broker_integration_redis_waiting_reader_gets_a_batch_in_one_read(
    redis_only: BrokerFactory,
) -> None:
    """A batch published while a worker waits reaches it in one read (one atomic script): the
    worker claims it in one round, rather than the first hint alone and the rest a claim
    later. (A read woken by one stream returns that stream's entries: hints for other
    queues or priority bands come with the next read.)"""
    producer, consumer = redis_only("producer"), redis_only("w1")
    waiting = asyncio.create_task(consumer.receive(["default"], 10, timeout=5))
    await asyncio.sleep(0.1)
    batch = [Message(f"job-{n}", "default") for n in range(5)]
    await producer.publish(batch)
    got = await asyncio.wait_for(waiting, timeout=5)
    assert sorted(d.job_id or "" for d in got) == [m.job_id for m in batch]


async def test_broker_integration_priorities_and_queue_names(id_broker: BrokerFactory) -> None:
    broker = id_broker("w1")
    await broker.publish(
        [
            Message("low", "default", -5),
            Message("normal", "default", 0),
            Message("high", "default", 10),
            Message("elsewhere", "reports", 10),
        ]
    )
    got = await broker.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in got] == ["high", "normal", "low"]
    assert all(d.queue == "default" for d in got)
    other = await broker.receive(["reports"], 10, timeout=1)
    assert [(d.job_id, d.queue) for d in other] == [("elsewhere", "reports")]


async def test_broker_integration_max_count_respected(id_broker: BrokerFactory) -> None:
    broker = id_broker("w1")
    await broker.publish([Message(f"job-{i}", "default") for i in range(7)])
    first = await broker.receive(["default"], 3, timeout=1)
    second = await broker.receive(["default"], 10, timeout=1)
    assert len(first) == 3 and len(second) == 4
    assert {d.job_id for d in first}.isdisjoint({d.job_id for d in second})


async def test_broker_integration_dead_consumers_hints_are_reclaimed(
    redis_only: BrokerFactory,
) -> None:
    dead, alive = redis_only("dead-worker"), redis_only("live-worker")
    await dead.publish([Message("job-1", "default")])
    taken = await dead.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in taken] == ["job-1"]  # ...and then the worker dies, no ack
    assert await alive.receive(["default"], 10, timeout=0.1) == []  # not yet idle long enough
    await asyncio.sleep(0.6)
    rescued = await alive.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in rescued] == ["job-1"]


async def test_broker_integration_nack_hands_back(id_broker: BrokerFactory) -> None:
    first, second = id_broker("w1"), id_broker("w2")
    await first.publish([Message("job-1", "default")])
    got = await first.receive(["default"], 10, timeout=1)
    await first.nack(got)
    again = await second.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in again] == ["job-1"]


async def test_broker_integration_survives_losing_its_keys(redis_only: BrokerFactory) -> None:
    broker = redis_only("w1")
    await broker.publish([Message("job-1", "default")])
    assert await broker.receive(["default"], 10, timeout=1)
    assert isinstance(broker, RedisBroker)
    await backends.delete_prefix(broker.prefix)  # what FLUSHALL does to this test's keys
    await broker.publish([Message("job-2", "default")])
    got = await broker.receive(["default"], 10, timeout=1)
    assert [d.job_id for d in got] == ["job-2"]


# What anyone with write access to the broker may put in a hint (RELIABILITY.md S18).
GARBAGE = (b"\xff\xfe\x00", b"with\x00nul", b"", b"x" * 37, b"\x1b[31mred", b"tab\there")


async def _inject(broker: Broker, bodies: tuple[bytes, ...]) -> None:
    """Put raw ``bodies`` into the ``default`` queue the way another client would: Redis
    stream entries (one without a ``job_id`` field too), RabbitMQ messages."""
    if isinstance(broker, RedisBroker):
        import redis.asyncio as aioredis

        raw = aioredis.Redis.from_url(backends.REDIS_URL)
        try:
            stream = broker.stream("default", "normal")
            for body in bodies:
                await raw.xadd(stream, {"job_id": body})
            await raw.xadd(stream, {"other": b"\x00"})
        finally:
            await raw.aclose()
        return
    import aio_pika

    assert isinstance(broker, RabbitMQBroker)
    connection = await aio_pika.connect(backends.AMQP_URL, timeout=5)
    try:
        channel = await connection.channel()
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body), routing_key=broker.queue_name("default")
            )
    finally:
        await connection.close()


async def test_broker_integration_garbage_entries_become_empty_hints(
    id_broker: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """S18 regression: a non-UTF-8 entry crash-looped every Redis executor (the client
    decoded replies), and on RabbitMQ a NUL reached the claim, whose error left the batch
    unacked; malformed entries now come out as hints naming no job, logged, and ack away."""
    broker = id_broker("w1")
    await broker.publish([Message("job-1", "default")])
    await _inject(broker, GARBAGE)
    got: list[Delivery] = []
    while more := await broker.receive(["default"], 20, timeout=1):
        got += more
    expected = len(GARBAGE) + (1 if isinstance(broker, RedisBroker) else 0)
    assert sorted(d.job_id or "" for d in got) == ["", *([""] * (expected - 1)), "job-1"]
    assert caplog.text.count("dropping a malformed hint") == expected
    await broker.ack(got)
    assert await broker.receive(["default"], 20, timeout=0.3) == []  # all acked, none left
