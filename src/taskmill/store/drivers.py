"""The driver for a database: the only place that chooses between them."""

from __future__ import annotations

from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.postgres.database import PostgresDatabase
from taskmill.store.postgres.driver import PostgresStore
from taskmill.store.sqlite.database import SQLiteDatabase
from taskmill.store.sqlite.driver import SQLiteStore


def store_for(db: Database) -> SqlStore:
    """The driver over ``db`` (a handle from ``Database.from_url``)."""
    if isinstance(db, PostgresDatabase):
        return PostgresStore(db)
    if isinstance(db, SQLiteDatabase):
        return SQLiteStore(db)
    raise TypeError(f"no store driver for {type(db).__name__}")


def open_store(url: str, *, pool_size: int = 10) -> SqlStore:
    """A driver with a database handle of its own for ``url``."""
    return store_for(Database.from_url(url, pool_size=pool_size))
