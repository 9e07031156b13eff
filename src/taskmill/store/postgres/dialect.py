"""PostgreSQL's SQL fragments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Table,
    any_,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeEngine

from taskmill.store.dialect import Dialect
from taskmill.store.types import UtcDateTime

# The advisory lock migrations take: any fixed number, the same in every taskmill process.
MIGRATION_LOCK_KEY = 0x7A5C_0D11_0000_0001


class PostgresDialect(Dialect):
    name = "postgresql"
    supports_skip_locked = True
    notifies = True
    # READ COMMITTED takes a snapshot per statement; a reader comparing two tables
    # (``replay.verify_batches``) needs one for the whole transaction.
    snapshot_isolation = "REPEATABLE READ"

    def db_now(self, plus_seconds: float = 0.0) -> ColumnElement[Any]:
        # statement_timestamp(): one instant for the whole statement, as SQLite's "now"
        # (clock_timestamp() is read per call).
        utc: TypeEngine[Any] = UtcDateTime()
        if plus_seconds:
            # A float formatted by Python, never user text, so inlining it is safe.
            expr = f"statement_timestamp() + make_interval(secs => {float(plus_seconds)!r})"
            return literal_column(expr, type_=utc)
        return literal_column("statement_timestamp()", type_=utc)

    def migration_lock(self) -> Executable:
        """``pg_advisory_xact_lock``: held until the migration's transaction ends. Without
        it, services started together on an empty database raced to create the same
        tables and types (``pg_type_typname_nsp_index`` violations crashed some)."""
        return self.transaction_lock(MIGRATION_LOCK_KEY)

    def transaction_lock(self, key: int) -> Executable:
        """``pg_advisory_xact_lock(key)``: released when the transaction ends."""
        return select(func.pg_advisory_xact_lock(key))

    def insert(self, table: Table) -> PostgresInsert:
        return postgresql.insert(table)

    def one_of(self, column: Column[Any], values: Sequence[str]) -> ColumnElement[bool]:
        """``column = ANY(:array)``: one parameter, one prepared statement for any count."""
        return column == any_(literal(list(values), ARRAY(column.type)))
