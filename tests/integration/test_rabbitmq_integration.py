"""What only the RabbitMQ broker does, on the real RabbitMQ: priority levels, prefetch equal
to the free slots, publisher confirms, a dead consumer's hints and a dropped connection."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from taskmill.brokers.base import Message
from taskmill.brokers.rabbitmq import MAX_PRIORITY, RabbitMQBroker, amqp_priority
from taskmill.core.errors import BrokerError
from tests import backends

MakeBroker = Callable[[], RabbitMQBroker]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    reason = await backends.rabbitmq_reachable()
    if reason is not None:
        backends.unavailable(reason)
    name = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    yield name
    await backends.delete_queues(name)


@pytest.fixture
async def make_broker(prefix: str) -> AsyncIterator[MakeBroker]:
    """Brokers on connections named ``prefix``, so a test can drop just those."""
    made: list[RabbitMQBroker] = []

    def factory() -> RabbitMQBroker:
        url = f"{backends.AMQP_URL}?name={prefix}"
        broker = RabbitMQBroker(url, prefix=prefix, timeout_seconds=10)
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        await broker.close()


async def _drain(broker: RabbitMQBroker) -> list[str]:
    """Every hint left, acked."""
    ids: list[str] = []
    while got := await broker.receive(["default"], 100, timeout=0.5):
        ids += [d.job_id or "" for d in got]
        await broker.ack(got)
    return ids


def test_rabbitmq_integration_priority_mapping_is_monotonic_and_bounded() -> None:
    levels = [amqp_priority(p) for p in range(-2000, 2001)]
    assert levels == sorted(levels)
    assert (min(levels), max(levels)) == (0, MAX_PRIORITY)
    assert [amqp_priority(p) for p in (-1000, -100, -10, -1, 0, 1, 9, 10, 99, 100, 1000)] == [
        0, 1, 2, 3, 4, 5, 5, 6, 6, 7, 8,
    ]  # fmt: skip
    assert amqp_priority(10**9) == MAX_PRIORITY and amqp_priority(-(10**9)) == 0


async def test_rabbitmq_integration_priority_levels_then_fifo(make_broker: MakeBroker) -> None:
    broker = make_broker()
    priorities = {"p0-first": 0, "p-1000": -1000, "p1000": 1000, "p5": 5, "p-5": -5}
    priorities |= {"p50": 50, "p0-second": 0, "p7": 7}  # p7 shares p5's level (1..9)
    await broker.publish([Message(job, "default", p) for job, p in priorities.items()])
    got = await broker.receive(["default"], 20, timeout=2)
    assert [d.job_id for d in got] == [
        "p1000", "p50", "p5", "p7", "p0-first", "p0-second", "p-5", "p-1000",
    ]  # fmt: skip
    await broker.ack(got)


async def test_rabbitmq_integration_prefetch_is_the_free_slots(
    make_broker: MakeBroker, prefix: str
) -> None:
    busy, idle = make_broker(), make_broker()
    await busy.publish([Message(f"job-{i}", "default") for i in range(20)])
    taken = await busy.receive(["default"], 5, timeout=2)
    assert len(taken) == 5
    await asyncio.sleep(0.3)
    # RabbitMQ pushed no more than the 5 free slots, and the busy worker, no longer
    # receiving, has no consumer hoarding hints an idle worker could take.
    assert await backends.rabbitmq_queue_state(f"{prefix}.default") == (15, 0)
    rest = await _drain(idle)
    assert sorted(rest + [d.job_id or "" for d in taken]) == sorted(f"job-{i}" for i in range(20))


async def test_rabbitmq_integration_publish_returns_after_the_confirms(
    make_broker: MakeBroker, prefix: str
) -> None:
    broker = make_broker()
    await broker.publish([Message(f"job-{i}", "default") for i in range(300)])
    assert (await backends.rabbitmq_queue_state(f"{prefix}.default"))[
        0
    ] == 300  # all in, none in flight


async def test_rabbitmq_integration_refused_publish_raises(
    make_broker: MakeBroker, prefix: str
) -> None:
    policy = f"{prefix}-max-one"
    # A queue that refuses messages past the first: RabbitMQ nacks them (publisher confirm).
    backends.rabbitmqctl(
        "set_policy", policy, f"^{prefix}\\.", '{"max-length":1,"overflow":"reject-publish"}',
        "--apply-to", "queues",
    )  # fmt: skip
    try:
        broker = make_broker()
        await broker.publish([Message("job-1", "default")])
        with pytest.raises(BrokerError):
            await broker.publish([Message("job-2", "default"), Message("job-3", "default")])
    finally:
        backends.rabbitmqctl("clear_policy", policy)


async def test_rabbitmq_integration_dead_workers_hints_return_at_once(
    make_broker: MakeBroker,
) -> None:
    dead, alive = make_broker(), make_broker()
    await dead.publish([Message("job-1", "default")])
    assert [d.job_id for d in await dead.receive(["default"], 10, timeout=2)] == ["job-1"]
    await dead.close()  # the worker dies before acking: its connection goes
    started = time.monotonic()
    again = await alive.receive(["default"], 10, timeout=5)
    assert [d.job_id for d in again] == ["job-1"] and time.monotonic() - started < 1


async def test_rabbitmq_integration_dropped_connection_recovers_losing_nothing(
    make_broker: MakeBroker, prefix: str
) -> None:
    broker = make_broker()
    await broker.publish([Message(f"before-{i}", "default") for i in range(5)])
    unacked = await broker.receive(["default"], 3, timeout=2)
    assert len(unacked) == 3
    backends.close_rabbitmq_connections(prefix)  # server side, CONNECTION_FORCED
    dropped = time.monotonic()
    # Publishing waits for the robust connection to come back rather than failing.
    await broker.publish([Message(f"after-{i}", "default") for i in range(5)])
    recovered_in = time.monotonic() - dropped
    await broker.ack(unacked)  # their channel is gone: skipped, not an error
    ids = await _drain(broker)
    # The 3 unacked hints were requeued by RabbitMQ; none of the 10 is lost.
    assert sorted(ids) == sorted(
        [f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)]
    )
    print(f"publishing resumed {recovered_in:.2f}s after the connection was dropped")  # noqa: T201


async def test_rabbitmq_integration_unreachable_raises_broker_error() -> None:
    broker = RabbitMQBroker("amqp://guest:guest@127.0.0.1:1/", timeout_seconds=2)
    try:
        with pytest.raises(BrokerError):
            await broker.publish([Message("job-1", "default")])
        with pytest.raises(BrokerError):
            await broker.receive(["default"], 10, timeout=0.1)
    finally:
        await broker.close()
