"""The SQL fragments that differ between databases: one small interface, implemented by
each driver (``store/sqlite/dialect.py``, ``store/postgres/dialect.py``), so the shared
statements never ask which database they run on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Table
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.expression import Executable


class Dialect(ABC):
    """SQL fragments that depend on the database."""

    #: The database's name, as SQLAlchemy spells it ("sqlite", "postgresql").
    name: str
    #: ``FOR UPDATE SKIP LOCKED``: claimers pass over rows another claimer holds.
    supports_skip_locked: bool
    #: Notifications delivered at commit to every process (``LISTEN``/``NOTIFY``).
    notifies: bool
    #: The isolation level under which every statement of a read transaction sees one
    #: snapshot (``None``: a read transaction already does, as SQLite's in WAL mode).
    snapshot_isolation: str | None = None

    @abstractmethod
    def db_now(self, plus_seconds: float = 0.0) -> ColumnElement[Any]:
        """The database clock (plus an offset): leases are judged on it, never on a
        worker's. One instant per statement, so a transition's ``updated_at``, its
        event's time and the lease it writes agree to the microsecond."""

    @abstractmethod
    def insert(self, table: Table) -> SQLiteInsert | PostgresInsert:
        """The database's own ``INSERT`` (the one with ``ON CONFLICT``)."""

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` (unique violations are expected, not errors)."""
        return self.insert(table).on_conflict_do_nothing()

    def upsert(
        self, table: Table, key: list[str], values: dict[str, Any], updates: dict[str, Any]
    ) -> Insert:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET updates``."""
        stmt = self.insert(table).values(values)
        return stmt.on_conflict_do_update(index_elements=key, set_=updates)

    def transaction_lock(self, key: int) -> Executable | None:
        """A statement that holds off every other transaction taking the same ``key``
        until this one ends, if the database needs one (SQLite's ``BEGIN IMMEDIATE``
        already serialises writers)."""
        return None

    def migration_lock(self) -> Executable | None:
        """A statement that holds every other migrating process off until this
        transaction ends, if the database needs one (SQLite's ``BEGIN IMMEDIATE`` does it)."""
        return None

    def by_key_only(self, column: Column[Any]) -> ColumnElement[Any]:
        """``column`` in a form the planner finds it through: by default itself; SQLite's
        driver hides it from index choice (see there)."""
        return column

    def one_of(self, column: Column[Any], values: Sequence[str]) -> ColumnElement[bool]:
        """``column IN (values)``, for long lists of ids: by default one parameter per
        value; PostgreSQL's driver binds one array (rendering a thousand parameters cost
        more CPU than the statement itself)."""
        return column.in_(values)
