"""The broker port (dramatiq's contract, taskmill's hint semantics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivery:
    """One hint from the broker.

    ``job_id`` names a queued job to claim; ``None`` means "queued work may exist, claim
    whatever is due" (the database broker, which has no messages of its own).
    """

    job_id: str | None
    queue: str
    token: object = None


class Broker(Protocol):
    """Carries "this job is queued" hints from the queue populator to workers.

    Losing a hint never loses a job: the failure watcher re-publishes jobs left in
    ``queued``, and a worker's claim ignores hints for jobs no longer queued.
    """

    async def publish(self, queue: str, job_ids: Sequence[str]) -> None:
        """Announce ``job_ids`` as queued on ``queue``. One round trip; duplicates are harmless."""
        ...

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Wait up to ``timeout`` seconds for hints; return ``[]`` on timeout. Never raises on
        timeout; raises :class:`~taskmill.core.errors.BrokerError` if the broker is gone."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget ``deliveries`` (the claim or outcome is committed). Idempotent."""
        ...

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Hand ``deliveries`` back for another worker (e.g. at shutdown). Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections; pending ``receive`` calls return ``[]``."""
        ...
