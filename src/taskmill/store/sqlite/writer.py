"""SQLite write transactions run whole on a thread of their own: one thread hop per
transaction. Through aiosqlite every cursor, execute and close is a hop to its thread
and back (ten for one job created, about 0.3 ms of wall time each with SQLAlchemy's
layers): the cost of ``schedule()`` on SQLite (``bench/README.md``).

``Database.write(work)`` runs here, queued on its write lock with ``transaction()``'s
writers, the store functions of the hot writes (job creation, the worker's claims and
outcomes, the populator's round): each is written for an ``AsyncConnection`` and gets an
:class:`InlineConnection`, whose ``execute`` never suspends, so the coroutine runs to
its end on this thread. Such a function may await nothing but its connection; one that
does is refused with an error and rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from sqlalchemy.engine import URL, Connection

from taskmill.store.engine import sqlite_sync_engine

T = TypeVar("T")


class SQLiteWriter:
    """One pysqlite connection, used from one thread only and kept open (a checkout
    from the pool per transaction cost as much as the transaction's statements)."""

    def __init__(self, url: URL) -> None:
        self.engine = sqlite_sync_engine(url)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskmill-sqlite")
        self._conn: Connection | None = None  # opened on the thread, at the first write

    async def run(self, write: Callable[[Connection], T]) -> T:
        """``write(conn)`` in a write transaction (``BEGIN IMMEDIATE``), committed when it
        returns, rolled back if it raises. A cancelled caller still waits for the
        transaction to end (a thread cannot be stopped halfway), so the caller's write
        lock is not let go while SQLite's is still held."""
        done = asyncio.get_running_loop().run_in_executor(self._thread, self._commit, write)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            raise

    def _commit(self, write: Callable[[Connection], T]) -> T:
        if self._conn is None:
            self._conn = self.engine.connect()
        with self._conn.begin():
            return write(self._conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        """Close the connection (on its own thread, as pysqlite requires) and the thread."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


class InlineConnection:
    """What store functions use of an ``AsyncConnection`` (``execute``), over a
    synchronous ``Connection``: its ``execute`` never suspends, so a coroutine that
    awaits only its connection runs to the end in one ``send`` (:func:`run_inline`), on
    the writer thread."""

    def __init__(self, sync: Connection) -> None:
        self._sync = sync

    @property
    def info(self) -> dict[Any, Any]:
        return self._sync.info

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._sync.execute(statement, parameters)


def run_inline(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end now; it must not wait for anything (see InlineConnection)."""
    try:
        work.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    work.close()
    raise RuntimeError("a write run on the SQLite writer awaited something besides its connection")
