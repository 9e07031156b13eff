"""The pruner: deletes finished jobs past their retention age, with their runs, events
and dependency rows, one short batch at a time (docs/adr/0009-retention.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.clock import Clock
from taskmill.core.retention import Cutoffs, PruneCounts, Retention
from taskmill.observability import metrics
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrunerConfig:
    retention: Retention
    batch_size: int = 1000
    pause_seconds: float = 0.1
    """Between two batches of :meth:`Pruner.prune_all` (the loop pauses as long)."""


class Pruner:
    """``run_once()`` deletes one batch; the loop (``run_periodically``) comes back at
    once after a batch that deleted something (after ``retention.pause_seconds``), and
    after ``retention.interval_seconds`` once nothing is left."""

    name = "pruner"

    def __init__(self, store: Store, clock: Clock, config: PrunerConfig) -> None:
        self.store = store
        self.clock = clock
        self.config = config

    def cutoffs(self) -> Cutoffs:
        """What is old enough to go now, by the configured ages."""
        return self.config.retention.cutoffs(self.clock.now())

    async def run_once(self) -> int:
        """Delete one batch (at most ``batch_size`` jobs, or events of deleted templates);
        return the rows deleted, 0 when nothing was left."""
        counts = await self.prune_batch(self.cutoffs())
        if counts.total:
            log.info(
                "pruned %d jobs, %d runs, %d events, %d dependency rows, %d workers",
                counts.jobs,
                counts.job_runs,
                counts.events,
                counts.job_dependencies,
                counts.workers,
            )
        return counts.total

    async def prune_batch(self, cutoffs: Cutoffs) -> PruneCounts:
        """One batch for ``cutoffs``, counted in ``taskmill_pruned_rows_total``."""
        counts = await self.store.prune(cutoffs, limit=self.config.batch_size)
        metrics.rows_pruned(counts)
        return counts

    async def prune_all(
        self, cutoffs: Cutoffs, on_batch: Callable[[PruneCounts], None] = lambda _: None
    ) -> PruneCounts:
        """Batches until nothing is left for ``cutoffs`` (fixed for the whole pass, so it
        ends although jobs keep finishing), ``pause_seconds`` apart; ``on_batch`` after
        each. ``taskmill prune``."""
        total = PruneCounts()
        while (counts := await self.prune_batch(cutoffs)).total:
            total += counts
            on_batch(counts)
            await asyncio.sleep(self.config.pause_seconds)  # other writers' turn
        return total

    async def count(self, cutoffs: Cutoffs) -> PruneCounts:
        """What :meth:`prune_all` would delete (a dry run)."""
        return await self.store.count_prunable(cutoffs)

    async def next_wake_at(self) -> datetime | None:
        return None  # ages pass continuously: look again every interval
