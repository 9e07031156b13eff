"""The database handle every store function runs through.

Each driver has its own (``store/sqlite/database.py``, ``store/postgres/database.py``):
how a write transaction is run is where the two databases differ most.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from taskmill.store.dialect import Dialect
from taskmill.store.engine import READ_ONLY_OPTION, create_engine
from taskmill.store.errors import translated

T = TypeVar("T")


class Database:
    """An engine plus its dialect; hands out translated transactions.

    ``transaction()`` is a write transaction (``BEGIN IMMEDIATE`` on SQLite, so
    concurrent writers wait on the busy timeout rather than fail); ``read()`` is a
    read-only one that never blocks a writer.
    """

    def __init__(self, engine: AsyncEngine, dialect: Dialect) -> None:
        self.engine = engine
        self.dialect = dialect

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """Every engine this handle runs statements through, as SQLAlchemy's synchronous
        ``Engine`` (where event listeners go)."""
        return (self.engine.sync_engine,)

    @classmethod
    def from_url(
        cls, url: str, *, pool_size: int = 10, transaction_pooler: bool = False
    ) -> Database:
        """The driver's database handle for ``url`` (``transaction_pooler``: reached
        through PgBouncer in transaction pooling mode; see ``engine.create_engine``)."""
        # Imported here: the drivers' handles are subclasses of this one.
        from taskmill.store.postgres.database import PostgresDatabase
        from taskmill.store.sqlite.database import SQLiteDatabase

        engine = create_engine(url, pool_size=pool_size, transaction_pooler=transaction_pooler)
        if engine.dialect.name == "sqlite":
            return SQLiteDatabase(engine)
        if transaction_pooler:  # a pooler cannot keep a session's synchronous_commit
            return PostgresDatabase(engine)

        def unflushed() -> AsyncEngine:  # the claims' few connections (ADR 0017)
            return create_engine(url, pool_size=2, commits_without_flush=True)

        return PostgresDatabase(engine, unflushed)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on exit, rolled back on error."""
        with translated():
            async with self.engine.begin() as conn:
                yield conn

    async def write(self, work: Callable[[AsyncConnection], Coroutine[Any, Any, T]]) -> T:
        """``await work(conn)`` in a write transaction. ``work`` must await nothing but
        ``conn.execute`` (SQLite's driver runs it whole on its writer thread)."""
        async with self.transaction() as conn:
            return await work(conn)

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction; ``snapshot``: every statement in it sees the same
        committed state (needed only by readers that compare tables with each other)."""
        options: dict[str, Any] = {READ_ONLY_OPTION: True}
        if snapshot and self.dialect.snapshot_isolation is not None:
            options["isolation_level"] = self.dialect.snapshot_isolation
        with translated():
            async with self.engine.connect() as raw:
                conn = await raw.execution_options(**options)
                async with conn.begin():
                    yield conn

    async def close(self) -> None:
        await self.engine.dispose()
