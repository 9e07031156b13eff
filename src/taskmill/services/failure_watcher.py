"""The failure watcher (seed 000): expired leases become failed attempts; silent workers die."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from taskmill.store import claims, workers
from taskmill.store.database import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailureWatcherConfig:
    batch_size: int = 500
    worker_dead_after_seconds: float = 60.0
    actor: str = "failure-watcher"


class FailureWatcher:
    """Rescues jobs whose worker stopped renewing its lease (judged on the database clock)."""

    name = "failure-watcher"

    def __init__(
        self,
        db: Database,
        config: FailureWatcherConfig,
        on_rescued: Callable[[], None] = lambda: None,
    ) -> None:
        self.db = db
        self.config = config
        self.on_rescued = on_rescued

    async def run_once(self) -> int:
        """Expire one batch of leases and mark silent workers dead; return jobs handled."""
        expired = await claims.expire_leases(
            self.db, limit=self.config.batch_size, actor=self.config.actor
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
        dead = await workers.mark_dead(self.db, self.config.worker_dead_after_seconds)
        if dead:
            log.warning("workers marked dead: %s", ", ".join(dead))
        return len(expired.rescued) + len(expired.failed)

    async def next_wake_at(self) -> datetime | None:
        return None  # leases expire on the database clock; check every poll interval
