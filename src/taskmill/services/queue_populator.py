"""The queue populator (seed 000; seed 002's dispatcher): due jobs -> ``queued`` -> broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from taskmill.brokers.base import Broker, Message
from taskmill.core.clock import Clock
from taskmill.core.failpoints import failpoint
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)

# The first round after the populator caught up queues this many at most, and each full
# round after it twice as many, up to the batch size: when thousands fall due at one
# tick, the first reach the workers after a small transaction, not a 500-row one. At 8
# the first of a tick's 200 jobs started 12-15 ms after it rather than 22-24, but on
# SQLite, where each round is a turn on the one writer, S11's two populators took 113 s
# rather than 84 and a 2,000-job burst drained slower (bench/README.md, issue 24).
FIRST_BATCH = 32


@dataclass(frozen=True, slots=True)
class QueuePopulatorConfig:
    batch_size: int = 500
    actor: str = "queue-populator"
    # Set with a per-merchant cap: merchants take turns in each batch (the store's enqueue_due).
    merchants_in_turn: bool = False


class QueuePopulator:
    """Marks due jobs ``queued`` in batches and publishes them (DESIGN.md §2)."""

    name = "queue-populator"

    def __init__(
        self, store: Store, broker: Broker, clock: Clock, config: QueuePopulatorConfig
    ) -> None:
        self.store = store
        self.broker = broker
        self.clock = clock
        self.config = config
        self._next_due: datetime | None = None
        self._limit = min(FIRST_BATCH, config.batch_size)

    async def run_once(self) -> int:
        """Queue up to one batch of due jobs; return how many were queued."""
        now = self.clock.now()
        limit = self._limit
        queued, self._next_due = await self.store.enqueue_due(
            now=now,
            limit=limit,
            actor=self.config.actor,
            merchants_in_turn=self.config.merchants_in_turn,
        )
        if len(queued) >= limit:  # more is probably due: come back at once, with more
            self._next_due = now
            self._limit = min(2 * limit, self.config.batch_size)
        elif self._next_due is None or self._next_due > now:
            # Caught up: the next burst starts small again. A short round with more
            # still due (rows another populator held) keeps its size: replicas sharing
            # a backlog would otherwise go on in rounds of FIRST_BATCH.
            self._limit = min(FIRST_BATCH, self.config.batch_size)
        # Publish after commit: a crash in between leaves jobs queued but unannounced,
        # which the failure watcher re-publishes; the reverse order could announce a
        # job that was never queued.
        if queued:
            failpoint("populator.after_commit")
        await self.broker.publish([Message(j.id, j.queue, j.priority) for j in queued])
        if queued:
            failpoint("populator.after_publish")
        if queued:
            log.debug("queued %d jobs", len(queued))
        return len(queued)

    async def next_wake_at(self) -> datetime | None:
        # Read by the last round inside its enqueue transaction (the loop asks right
        # after a round that was not a full batch): one round trip fewer per round.
        # After a round full at its (smaller) limit: now, to come back at once.
        return self._next_due
