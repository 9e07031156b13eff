"""How long a RabbitMQ receive gathers the hints that follow its first one: a burst
comes out as one batch, a steady flow is not held back to fill one."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from taskmill.brokers.rabbitmq import GATHER_GAP_SECONDS, GATHER_SECONDS, RabbitMQBroker


def _broker() -> RabbitMQBroker:
    return RabbitMQBroker("amqp://unused", prefix="gather-test")  # connects only when used


async def _push(broker: RabbitMQBroker, count: int, every: float) -> None:
    """RabbitMQ's pushes, one hint per ``every`` seconds (the consumer's callback)."""
    for _ in range(count):
        await broker._on_message("default", cast(Any, object()))
        await asyncio.sleep(every)


async def test_a_burst_is_gathered_into_one_batch() -> None:
    broker = _broker()
    await broker._on_message("default", cast(Any, object()))
    pushing = asyncio.ensure_future(_push(broker, 30, 0))  # back to back, as one frame each
    await broker._gather_burst(100)
    await pushing
    assert len(broker._inbox) == 31


async def test_a_steady_flow_is_not_held_back_to_fill_a_batch() -> None:
    """Hints closer together than the gap window keep coming: the deadline from the
    first one ends the batch. (A wait per hint alone kept the first one waiting until
    100 had come.)"""
    broker = _broker()
    every = GATHER_GAP_SECONDS * 0.5  # inside the gap window: only the deadline stops it
    await broker._on_message("default", cast(Any, object()))
    pushing = asyncio.ensure_future(_push(broker, 300, every))
    await broker._gather_burst(100)
    gathered = len(broker._inbox)
    pushing.cancel()
    # Within GATHER_SECONDS of the first hint at most one hint per `every` can come (a
    # stall of the loop delays the pushes as much as the deadline's check).
    assert gathered <= 1 + GATHER_SECONDS / every + 1, gathered
    assert gathered < 100
