"""SQLite's database handle: this process's writers queue on one lock, the hot writes
run whole on the writer thread (``writer.py``), and the wake-ups a transaction notified
go to the other processes once it committed (``wakeups.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskmill.store.database import Database
from taskmill.store.errors import translated
from taskmill.store.notify import PENDING
from taskmill.store.sqlite.dialect import SQLiteDialect
from taskmill.store.sqlite.wakeups import Wakeup, WakeupSender, directory_for
from taskmill.store.sqlite.writer import InlineConnection, SQLiteWriter, run_inline

T = TypeVar("T")


class SQLiteDatabase(Database):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, SQLiteDialect())
        # SQLite has one writer. Queueing this process's writers here costs nothing,
        # whereas letting them collide inside SQLite makes each loser sleep in the busy
        # handler (1, 2, 5, 10... ms): measured 5x slower with 50 concurrent jobs.
        self._write_lock = asyncio.Lock()
        self._writer = SQLiteWriter(engine.url)
        directory = directory_for(engine.url.database)
        self.wakeups = None if directory is None else WakeupSender(directory)

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """The async engine's and the one-hop writer's."""
        return (self.engine.sync_engine, self._writer.engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        pending: set[Wakeup] = set()
        async with self._write_lock:
            async with super().transaction() as conn:
                conn.info[PENDING] = pending
                try:
                    yield conn
                finally:
                    conn.info.pop(PENDING, None)
            self._wake_others(pending)  # committed (an error skips this)

    async def write(self, work: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """``work`` runs whole on the writer thread (one thread hop instead of three per
        statement), queued with ``transaction()``'s writers; the ``AsyncConnection`` it
        gets there is an ``InlineConnection``."""

        pending: set[Wakeup] = set()

        def inline(sync: Connection) -> T:
            sync.info[PENDING] = pending
            try:
                return run_inline(work(cast(AsyncConnection, InlineConnection(sync))))
            finally:
                sync.info.pop(PENDING, None)

        async with self._write_lock:
            with translated():
                result = await self._writer.run(inline)
        self._wake_others(pending)
        return result

    def _wake_others(self, pending: set[Wakeup]) -> None:
        if pending and self.wakeups is not None:
            self.wakeups.send(sorted(pending))

    async def close(self) -> None:
        if self.wakeups is not None:
            self.wakeups.close()
        await self._writer.close()
        await super().close()
