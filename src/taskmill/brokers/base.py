"""The broker port (dramatiq's contract, taskmill's hint semantics)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# jobs.id is a 36-character uuid; an id no job can have is garbage.
MAX_JOB_ID_LENGTH = 36


@dataclass(frozen=True, slots=True)
class Message:
    """ "Job ``job_id`` is queued on ``queue``": all a broker ever carries (never payloads)."""

    job_id: str
    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One hint from the broker.

    ``job_id`` names a queued job to claim; ``None`` means "queued work may exist, claim
    whatever is due" (the database broker, which has no messages of its own). ``token``
    is the broker's handle for ``ack``/``nack``.
    """

    job_id: str | None
    queue: str
    token: object = None


def hinted_job_id(raw: object, entry: object) -> str:
    """The job id in a hint's raw ``bytes``, or ``""`` when the hint is malformed (no id,
    bytes that are not UTF-8, control characters, longer than any job id): ``""`` claims
    no job, so the hint is acked away and logged (``entry``, the whole hint as received)
    instead of failing every read or claim it is part of. Anyone who can write to the
    broker can put anything in a hint (RELIABILITY.md S18)."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else ""
    except UnicodeDecodeError:
        text = ""
    if 0 < len(text) <= MAX_JOB_ID_LENGTH and text.isprintable():
        return text
    log.warning("dropping a malformed hint: %r", entry, extra={"event": "bad_hint"})
    return ""


class Broker(Protocol):
    """Carries "this job is queued" hints from the queue populator to workers.

    Losing a hint never loses a job: the failure watcher re-publishes jobs left in
    ``queued``, and a worker's claim ignores hints for jobs no longer queued. So every
    method may deliver a hint twice; none may be relied on to deliver it at all.

    ``carries_ids`` is ``False`` for a broker whose deliveries only say "look in the
    database" (``job_id`` ``None``): workers then also look after every timeout.

    ``producers_announce`` is ``True`` where a publish per job is cheap and reaches
    workers whatever else they are configured with (docs/explanation/architecture.md).
    """

    carries_ids: bool
    # Whether producers announce the jobs they create due at once themselves (created
    # ``queued``, one publish per ``schedule()``) instead of leaving them to the populator.
    producers_announce: bool

    async def publish(self, messages: Sequence[Message]) -> None:
        """Announce ``messages``. One round trip; duplicates are harmless. Raises
        :class:`~taskmill.core.errors.BrokerError` if the broker is unreachable."""
        ...

    async def receive(
        self, queues: Sequence[str], max_count: int, timeout: float
    ) -> list[Delivery]:
        """Wait up to ``timeout`` seconds for at most ``max_count`` hints, highest priority
        first; return ``[]`` on timeout. Raises ``BrokerError`` if the broker is gone."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget ``deliveries`` (their claim committed, or they were stale). Idempotent."""
        ...

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        """Hand ``deliveries`` back for another worker (e.g. at shutdown). Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections; pending ``receive`` calls return ``[]``."""
        ...
