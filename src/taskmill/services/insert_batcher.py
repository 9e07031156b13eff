"""Group insert: jobs that ``schedule()`` calls create at the same moment share one
statement and one publish (the producer's side of what ``group_commit`` does for
outcomes).

A call alone is written at once, as a batch of one. Calls that arrive while a batch is
in flight (an API under load, ``asyncio.gather`` over ``schedule()``) wait for it and
then go together: one PostgreSQL round trip and one broker round trip for the lot.

A call returns once its job is committed; the broker hint goes out from a task of its
own meanwhile (jobs committed while a publish is in flight share the next one). The
database is the truth and a hint only a wake-up, so the caller need not wait for it:
that is a broker round trip off every ``schedule()`` (``bench/README.md``). A hint that
never goes out (the process dies first) is the failure watcher's to publish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from taskmill.core.jobs import Job
from taskmill.services.loop import settle
from taskmill.store.protocol import MadeJob, Store

log = logging.getLogger(__name__)

Announce = Callable[[Sequence[Job]], Awaitable[None]]

_Pending = tuple[MadeJob, "asyncio.Future[Job]"]


class InsertBatcher:
    """Inserts jobs made by ``make_job`` (``store.protocol``) in batches of up to ``max_batch``,
    then has ``announce`` publish them. One writer task and one announcer task at a
    time; :meth:`drain` waits for both before the broker closes."""

    def __init__(self, store: Store, announce: Announce, max_batch: int = 64) -> None:
        self.store = store
        self.announce = announce
        self.max_batch = max_batch
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._unannounced: list[Job] = []
        self._announcer: asyncio.Task[None] | None = None

    async def insert(self, made: MadeJob) -> Job:
        """Insert ``made`` (in a batch with whatever else is waiting); return the job once
        it is committed (its announcement follows). Raises what the insert raised. The
        insert goes on if the caller is cancelled meanwhile."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Job] = loop.create_future()
        self._pending.append((made, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="insert-batcher")
        return await asyncio.shield(done)

    async def _write_pending(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            await self.store.insert_jobs([made for made, _ in batch])
        except Exception as exc:  # the writer must outlive any insert: hand errors back
            if len(batch) == 1:
                settle(batch[0][1], exc)
                return
            # One bad row must not fail the others: insert each on its own.
            log.warning("a grouped insert failed (%s); inserting %d one by one", exc, len(batch))
            for item in batch:
                await self._write([item])
            return
        created = [made.job for made, _ in batch]
        self._unannounced.extend(created)
        if self._announcer is None or self._announcer.done():
            loop = asyncio.get_running_loop()
            self._announcer = loop.create_task(self._announce_pending(), name="announcer")
        for (_, done), job in zip(batch, created, strict=True):
            settle(done, job)

    async def _announce_pending(self) -> None:
        while self._unannounced:
            created, self._unannounced = self._unannounced, []
            try:
                await self.announce(created)
            except Exception:  # committed is committed: the failure watcher announces them
                log.exception("announcing %d new jobs failed", len(created))

    async def drain(self) -> None:
        """Wait until every insert asked for is written and announced."""
        while True:  # again after each wait: a last batch may start a new announcer
            busy = [t for t in (self._writer, self._announcer) if t is not None and not t.done()]
            if not busy:
                return
            await asyncio.wait(busy)
