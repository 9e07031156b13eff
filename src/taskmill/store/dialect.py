"""The few places where PostgreSQL and SQLite differ, behind one small object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, func, literal_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeEngine

from taskmill.store.types import UtcDateTime

# The exact text format UtcDateTime stores on SQLite: strftime's %f gives milliseconds
# ("SS.SSS"), padded here to the microseconds SQLAlchemy writes, so text order = time order.
_SQLITE_NOW_FORMAT = "%Y-%m-%d %H:%M:%f000"


@dataclass(frozen=True, slots=True)
class Dialect:
    """SQL fragments that depend on the database."""

    name: str

    @property
    def is_sqlite(self) -> bool:
        return self.name == "sqlite"

    def db_now(self, plus_seconds: float = 0.0) -> ColumnElement[Any]:
        """The database clock (plus an offset): leases are judged on it, never on a worker's."""
        utc: TypeEngine[Any] = UtcDateTime()
        if self.is_sqlite:
            if plus_seconds:
                return func.strftime(
                    _SQLITE_NOW_FORMAT, "now", f"{plus_seconds:+.6f} seconds", type_=utc
                )
            return func.strftime(_SQLITE_NOW_FORMAT, "now", type_=utc)
        # statement_timestamp(): one instant for the whole statement, as SQLite's "now",
        # so a transition's updated_at, its event's time and the finished_at, started_at or
        # lease it writes agree to the microsecond (clock_timestamp() is read per call).
        if plus_seconds:
            # A float formatted by Python, never user text, so inlining it is safe.
            expr = f"statement_timestamp() + make_interval(secs => {float(plus_seconds)!r})"
            return literal_column(expr, type_=utc)
        return literal_column("statement_timestamp()", type_=utc)

    def insert_ignoring_conflicts(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` (unique violations are expected, not errors)."""
        if self.is_sqlite:
            return sqlite.insert(table).on_conflict_do_nothing()
        return postgresql.insert(table).on_conflict_do_nothing()

    def upsert(
        self,
        table: Table,
        key: list[str],
        values: dict[str, Any],
        updates: dict[str, Any],
    ) -> Insert:
        """``INSERT ... ON CONFLICT (key) DO UPDATE SET updates``."""
        stmt = (sqlite.insert if self.is_sqlite else postgresql.insert)(table).values(values)
        return stmt.on_conflict_do_update(index_elements=key, set_=updates)

    def by_key_only(self, column: Column[Any]) -> ColumnElement[Any]:
        """``column`` in a form SQLite will not pick an index for (``+column``).

        Guards like ``id IN (...) AND status IN (...)`` must be found through the primary
        key; without statistics SQLite may pick the status index instead and read every
        job in that status (measured: 550 ms instead of 6 ms with 1M scheduled jobs).
        """
        if not self.is_sqlite:
            return column
        return literal_column(f"+{column.table.name}.{column.name}", type_=column.type)

    @property
    def supports_skip_locked(self) -> bool:
        return not self.is_sqlite
