"""The default broker: the database itself. Publishing only wakes in-process workers;
workers in other processes find queued jobs by polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from taskmill.brokers.base import Delivery


class DatabaseBroker:
    """Hints without messages: ``receive`` answers "look in the database" when woken
    by ``publish`` in this process, or when ``timeout`` (the poll interval) passes."""

    def __init__(self) -> None:
        self._published = asyncio.Event()
        self._closed = False

    async def publish(self, queue: str, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._published.set()

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        if self._closed:
            return []
        # On timeout, poll anyway: another process may have queued work.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._published.wait(), timeout)
        self._published.clear()
        if self._closed:
            return []
        return [Delivery(job_id=None, queue=queue) for queue in queues]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        self._published.set()
