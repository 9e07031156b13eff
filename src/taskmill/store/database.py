"""The database handle every store function runs through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from taskmill.core.errors import StoreUnavailable
from taskmill.store.dialect import Dialect
from taskmill.store.engine import READ_ONLY_OPTION, create_engine
from taskmill.store.errors import translated
from taskmill.store.sqlite_writer import InlineConnection, SQLiteWriter, run_inline

T = TypeVar("T")


class Database:
    """An engine plus its dialect; hands out translated transactions.

    ``transaction()`` is a write transaction (``BEGIN IMMEDIATE`` on SQLite, so
    concurrent writers wait on the busy timeout rather than fail); ``read()`` is a
    read-only one that never blocks a writer.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = Dialect(engine.dialect.name)
        # SQLite has one writer. Queueing this process's writers here costs nothing,
        # whereas letting them collide inside SQLite makes each loser sleep in the busy
        # handler (1, 2, 5, 10... ms): measured 5x slower with 50 concurrent jobs.
        self._write_lock = asyncio.Lock() if self.dialect.is_sqlite else None
        self._sqlite_writer = SQLiteWriter(engine.url) if self.dialect.is_sqlite else None

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """Every engine this handle runs statements through, as SQLAlchemy's synchronous
        ``Engine`` (where event listeners go): the async engine's and, on SQLite, the
        one-hop writer's."""
        writer = (self._sqlite_writer.engine,) if self._sqlite_writer is not None else ()
        return (self.engine.sync_engine, *writer)

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        return cls(create_engine(url, pool_size=pool_size))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit, rolled back on error."""
        if self._write_lock is None:
            with translated():
                async with self.engine.begin() as conn:
                    yield conn
            return
        async with self._write_lock:
            with translated():
                async with self.engine.begin() as conn:
                    yield conn

    async def write(self, work: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """``await work(conn)`` in a write transaction. On SQLite it runs whole on the
        writer thread (``sqlite_writer.py``: one thread hop instead of three per
        statement), queued with ``transaction()``'s writers, so ``work`` must await
        nothing but ``conn.execute``: the ``AsyncConnection`` it gets there is an
        ``InlineConnection``."""
        if self._write_lock is None or self._sqlite_writer is None:
            async with self.transaction() as conn:
                return await work(conn)

        def inline(sync: Connection) -> T:
            return run_inline(work(cast(AsyncConnection, InlineConnection(sync))))

        async with self._write_lock:
            with translated():
                return await self._sqlite_writer.run(inline)

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[PoolProxiedConnection]:
        """A pooled connection for ``store/direct.py`` to drive asyncpg on itself
        (``.driver_connection``), outside any transaction: each statement commits on its
        own, no ``BEGIN`` and ``COMMIT`` round trips, for a write that fits in one
        statement (on PostgreSQL, data-modifying CTEs). Taken from the pool without an
        ``AsyncConnection`` around it: one greenlet hop instead of three (0.17 -> 0.10 ms
        of CPU per statement). Not for SQLite, whose writers queue in ``transaction()``."""
        if self._write_lock is not None:
            raise RuntimeError("autocommit() is for PostgreSQL; SQLite writes use transaction()")
        with translated():
            try:
                raw = await self.engine.raw_connection()
            except self.engine.dialect.loaded_dbapi.Error as exc:  # engine.connect() wraps it
                raise StoreUnavailable(str(exc)) from exc
        try:
            yield raw
        finally:
            raw.close()  # back to the pool (an invalidated one is replaced there)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        with translated():
            async with self.engine.connect() as raw:
                conn = await raw.execution_options(**{READ_ONLY_OPTION: True})
                async with conn.begin():
                    yield conn

    async def close(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
        await self.engine.dispose()
