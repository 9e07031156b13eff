"""The SQLite driver: the shared statements, written through ``SQLiteDatabase`` (one
writer lock; the hot writes whole on the writer thread, ``writer.py``)."""

from __future__ import annotations

from taskmill.store.driver import SqlStore
from taskmill.store.sqlite.database import SQLiteDatabase


class SQLiteStore(SqlStore):
    def __init__(self, db: SQLiteDatabase) -> None:
        super().__init__(db)
