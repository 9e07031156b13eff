"""The default broker: the database itself. Publishing only wakes in-process workers;
workers in other processes find queued jobs by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from taskmill.brokers.base import Delivery, Message


class DatabaseBroker:
    """Hints without messages: ``receive`` answers "look in the database" when woken by
    ``publish`` in this process (or a PostgreSQL notification), and ``[]`` on timeout,
    after which workers poll the database anyway (``carries_ids`` is ``False``)."""

    carries_ids = False
    # A producer without broker.url cannot tell whether the workers read the database or
    # a broker it was not told about: the populator (configured like the workers) queues.
    producers_announce = False

    def __init__(self) -> None:
        self._published = asyncio.Event()
        self._closed = False

    async def publish(self, messages: Sequence[Message]) -> None:
        if messages:
            self._published.set()

    def wake(self) -> None:
        """Another process queued work (a PostgreSQL notification): look now."""
        self._published.set()

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if self._closed:
            return []
        woken = False
        with contextlib.suppress(TimeoutError):
            woken = await asyncio.wait_for(self._published.wait(), timeout)
        self._published.clear()
        if self._closed or not woken:
            return []
        return [Delivery(job_id=None, queue=queue) for queue in queues]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._published.set()
