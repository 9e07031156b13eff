"""Progress reports from handlers (``ctx.progress``), written at most once a second per
job: a handler reporting in a tight loop costs one small write a second, not one per call."""

from __future__ import annotations

import asyncio
import logging
import threading

from taskmill.core.clock import Clock
from taskmill.core.errors import StoreError
from taskmill.store.protocol import ProgressReport, Store

log = logging.getLogger(__name__)

PROGRESS_WRITE_SECONDS = 1.0


class ProgressReporter:
    """Collects the latest report per job (from any thread: sync handlers run in a pool)
    and writes them in one batch every ``PROGRESS_WRITE_SECONDS``."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._latest: dict[str, ProgressReport] = {}
        self._lock = threading.Lock()

    def report(self, job_id: str, attempt: int, fraction: float, message: str | None) -> None:
        """Keep the latest report of ``job_id`` until the next write (thread-safe)."""
        latest = ProgressReport(job_id, attempt, fraction, message, self.clock.now())
        with self._lock:
            self._latest[job_id] = latest

    async def flush(self) -> None:
        """Write what was reported since the last write; on a store error the reports
        are kept for the next try unless newer ones replaced them."""
        with self._lock:
            batch, self._latest = self._latest, {}
        if not batch:
            return
        try:
            await self.store.record_progress(list(batch.values()))
        except StoreError:
            with self._lock:
                self._latest = batch | self._latest
            raise

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_WRITE_SECONDS)
            try:
                await self.flush()
            except StoreError as exc:
                log.warning("progress not written, will retry: %s", exc)
