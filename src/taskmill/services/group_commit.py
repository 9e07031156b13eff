"""Group commit: outcomes that arrive while a commit is in flight share the next one.

The batch goes to the store's ``record_outcomes`` (successes together, with a handful of
multi-row statements or, on PostgreSQL without failures, one statement). At low load a
batch is one outcome and nothing waits; under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from taskmill.services.loop import settle
from taskmill.store.protocol import Attempt, Failure, Store, Success

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Item:
    done: asyncio.Future[bool]
    success: Success | None = None
    failure: tuple[Attempt, Failure] | None = None


class GroupCommitter:
    """Records outcomes in shared transactions, one writer task, batches of up to
    ``max_batch``."""

    def __init__(self, store: Store, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: asyncio.Queue[_Item] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def succeed(self, success: Success) -> bool:
        """Record a success (batched with others); ``False`` if the claim was lost.

        Raises what the store raised (a ``StoreError`` from the database). The write
        happens even if the caller is cancelled meanwhile.
        """
        return await self._submit(_Item(self._future(), success=success))

    async def fail(self, attempt: Attempt, failure: Failure) -> bool:
        """Record a failure (batched with others); ``False`` if the claim was lost."""
        return await self._submit(_Item(self._future(), failure=(attempt, failure)))

    @staticmethod
    def _future() -> asyncio.Future[bool]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, item: _Item) -> bool:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever(), name="group-commit")
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
        failures = [item for item in batch if item.failure is not None]
        try:
            done, failed = await self.store.record_outcomes(
                [i.success for i in successes if i.success],
                [i.failure for i in failures if i.failure],
            )
        except Exception as exc:  # the writer must outlive any write: hand errors back
            if len(batch) == 1:
                settle(batch[0].done, exc)
                return
            # One bad outcome must not fail the others: try each in its own transaction.
            log.warning("a grouped commit failed (%s); writing %d one by one", exc, len(batch))
            for item in batch:
                await self._commit([item])
            return
        for item, result in zip([*successes, *failures], [*done, *failed], strict=True):
            settle(item.done, result)

    async def flush(self) -> None:
        """Wait until every outcome submitted so far is committed (or failed)."""
        if self._writer is not None and not self._writer.done():
            await self._pending.join()

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
