"""The failure watcher (seed 000): expired leases become failed attempts, jobs whose hint
was lost are published again, silent workers are marked dead."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskmill.brokers.base import Broker, Message
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailureWatcherConfig:
    batch_size: int = 500
    worker_dead_after_seconds: float = 25.0
    requeue_after_seconds: float = 30.0
    actor: str = "failure-watcher"
    # How often to look for queued jobs of a task type no live worker runs (a count over
    # the queued jobs: not every round).
    unserved_check_seconds: float = 60.0


class FailureWatcher:
    """Rescues jobs whose worker stopped renewing its lease (judged on the database clock)
    and re-announces jobs stuck in ``queued`` (the broker lost their hint)."""

    name = "failure-watcher"

    def __init__(
        self,
        store: Store,
        broker: Broker,
        config: FailureWatcherConfig,
        on_rescued: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.config = config
        self.on_rescued = on_rescued
        self._republished: dict[str, float] = {}
        self._unserved_checked = -math.inf

    async def run_once(self) -> int:
        """One round of each duty; return how many jobs it touched."""
        # Dead workers first: their jobs are rescued in the same round.
        dead = await self.store.mark_dead_workers(self.config.worker_dead_after_seconds)
        if dead:
            log.warning("workers marked dead (their jobs are rescued now): %s", ", ".join(dead))
        touched = await self._expire_leases()
        touched += await self._republish_stuck()
        await self._warn_unserved()
        return touched

    async def _warn_unserved(self) -> None:
        """Say when queued jobs have a task type no live worker runs: they would otherwise
        wait without a word (the API's job and /stats, /metrics and the UI say it too)."""
        now = time.monotonic()
        if now - self._unserved_checked < self.config.unserved_check_seconds:
            return
        self._unserved_checked = now
        for task_type, count in sorted((await self.store.unserved_task_types()).items()):
            log.warning(
                "%d queued jobs of task type %r wait: no live worker runs it "
                "(start a worker whose app registers it, or cancel them)",
                count,
                task_type,
            )

    async def _expire_leases(self) -> int:
        expired = await self.store.expire_leases(
            limit=self.config.batch_size, actor=self.config.actor
        )
        for job in expired.rescued:
            log.warning(
                "lease expired; job rescued for another attempt",
                extra={"job_id": job.id, "attempt": job.attempt, "event": "job.lease_expired"},
            )
        for job in expired.failed:
            log.error(
                "lease expired on the last attempt; job failed",
                extra={"job_id": job.id, "attempt": job.attempt, "event": "job.failed"},
            )
        if expired.rescued:
            self.on_rescued()
        return len(expired.rescued) + len(expired.failed)

    async def _republish_stuck(self) -> int:
        if not self.broker.carries_ids:
            return 0  # workers read queued jobs straight from the database
        stuck = await self.store.stuck_in_queue(
            older_than_seconds=self.config.requeue_after_seconds,
            limit=self.config.batch_size,
        )
        now = time.monotonic()
        # Not again before another threshold has passed (the first hint may be in flight).
        horizon = now - self.config.requeue_after_seconds
        self._republished = {k: t for k, t in self._republished.items() if t > horizon}
        due = [job for job in stuck if job.id not in self._republished]
        if not due:
            return 0
        await self.broker.publish([Message(j.id, j.queue, j.priority) for j in due])
        self._republished.update((job.id, now) for job in due)
        log.warning("published %d jobs again: queued without a claim for too long", len(due))
        return 0  # hints are not progress: do not loop on them

    async def next_wake_at(self) -> datetime | None:
        return None  # leases expire on the database clock; check every poll interval
