"""SQLite's database handle: this process's writers queue on one lock, and the hot
writes run whole on the writer thread (``writer.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskmill.store.database import Database
from taskmill.store.errors import translated
from taskmill.store.sqlite.dialect import SQLiteDialect
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

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """The async engine's and the one-hop writer's."""
        return (self.engine.sync_engine, self._writer.engine)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, super().transaction() as conn:
            yield conn

    async def write(self, work: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """``work`` runs whole on the writer thread (one thread hop instead of three per
        statement), queued with ``transaction()``'s writers; the ``AsyncConnection`` it
        gets there is an ``InlineConnection``."""

        def inline(sync: Connection) -> T:
            return run_inline(work(cast(AsyncConnection, InlineConnection(sync))))

        async with self._write_lock:
            with translated():
                return await self._writer.run(inline)

    async def close(self) -> None:
        await self._writer.close()
        await super().close()
