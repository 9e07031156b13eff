"""Group commit: outcomes that arrive while a commit is in flight share the next one.

Successes — the common case — are also written together, with a handful of multi-row
statements for the whole batch (``outcomes.succeed_many``); other writes run one by one
inside the shared transaction. At low load a batch is one outcome and nothing waits;
under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.services.loop import settle
from taskmill.store import outcomes
from taskmill.store.database import Database

log = logging.getLogger(__name__)

Write = Callable[[AsyncConnection], Awaitable[bool]]


@dataclass(slots=True)
class _Item:
    done: asyncio.Future[bool]
    write: Write | None = None
    success: outcomes.Success | None = None


class GroupCommitter:
    """Runs writes in shared transactions, one writer task, batches of up to ``max_batch``."""

    def __init__(self, db: Database, max_batch: int = 256) -> None:
        self.db = db
        self.max_batch = max_batch
        self._pending: asyncio.Queue[_Item] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, write: Write) -> bool:
        """Run ``write`` in a transaction shared with others; return its result.

        Raises what the write raised (a ``StoreError`` or ``Conflict`` from the database).
        The write runs even if the caller is cancelled meanwhile.
        """
        return await self._submit(write=write)

    async def succeed(self, success: outcomes.Success) -> bool:
        """Record a success (batched with others); ``False`` if the claim was lost."""
        return await self._submit(success=success)

    async def _submit(
        self, write: Write | None = None, success: outcomes.Success | None = None
    ) -> bool:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever(), name="group-commit")
        item = _Item(asyncio.get_running_loop().create_future(), write, success)
        self._pending.put_nowait(item)
        return await asyncio.shield(item.done)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._pending.get()]
            while len(batch) < self.max_batch and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            await self._commit(batch)
            for _ in batch:
                self._pending.task_done()

    async def _commit(self, batch: list[_Item]) -> None:
        successes = [item for item in batch if item.success is not None]
        others = [item for item in batch if item.write is not None]
        recorded = [i.success for i in successes if i.success]
        results: list[bool] = []
        try:
            if not others:  # the common case: on PostgreSQL, one statement
                done = await outcomes.record_successes(self.db, recorded)
            else:
                done, results = await self.db.write(
                    lambda conn: self._write_all(conn, recorded, others)
                )
        except Exception as exc:  # the writer must outlive any write: hand errors back
            if len(batch) == 1:
                settle(batch[0].done, exc)
                return
            # One bad write must not fail the others: try each in its own transaction.
            log.warning("a grouped commit failed (%s); writing %d one by one", exc, len(batch))
            for item in batch:
                await self._commit([item])
            return
        for item, result in zip([*successes, *others], [*done, *results], strict=True):
            settle(item.done, result)

    async def _write_all(
        self, conn: AsyncConnection, recorded: list[outcomes.Success], others: list[_Item]
    ) -> tuple[list[bool], list[bool]]:
        done = await outcomes.succeed_many(conn, self.db.dialect, recorded)
        return done, [await i.write(conn) for i in others if i.write]

    async def flush(self) -> None:
        """Wait until every write submitted so far is committed (or failed)."""
        if self._writer is not None and not self._writer.done():
            await self._pending.join()

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
