"""Table health on PostgreSQL: the statistics of the hot tables, and a VACUUM of one
(docs/adr/0012-table-health.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import String

from taskmill.core.errors import StoreUnavailable
from taskmill.core.table_health import HOT_TABLES, TableStats
from taskmill.store.errors import from_asyncpg
from taskmill.store.postgres.database import PostgresDatabase

# The advisory lock of a table's vacuum: this key and the table's oid (two int4 keys:
# distinct from the migrations' one bigint key).
VACUUM_LOCK_KEY = 0x7A5C_0D12
_KEYS = "$1, $2::text::regclass::oid::int"

_STATS = text(
    """
    SELECT s.relname AS table, s.n_live_tup AS live_rows, s.n_dead_tup AS dead_rows,
           pg_total_relation_size(s.relid) AS size_bytes,
           s.last_vacuum, s.last_autovacuum,
           current_setting('autovacuum')::bool
             AND NOT coalesce('autovacuum_enabled=false' = ANY (c.reloptions), false)
             AS autovacuum,
           EXISTS (SELECT 1 FROM pg_stat_progress_vacuum p WHERE p.relid = s.relid)
             AS vacuuming
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY (:tables)
    ORDER BY s.relname
    """
).bindparams(bindparam("tables", type_=ARRAY(String)))


async def table_stats(db: PostgresDatabase, tables: Sequence[str]) -> list[TableStats]:
    """``tables`` as ``pg_stat_user_tables`` counts them now (the counts lag the writes by
    up to a second: backends report them in batches)."""
    async with db.read() as conn:
        rows = (await conn.execute(_STATS, {"tables": list(tables)})).mappings().all()
    return [TableStats(**row) for row in rows]


async def vacuum(
    db: PostgresDatabase, table: str, *, timeout_seconds: float, cost_delay_ms: float = 0.0
) -> bool:
    """``VACUUM (ANALYZE) table`` in autocommit (VACUUM refuses a transaction), under an
    advisory lock held by this session only while it runs; ``False`` when another
    session holds it. ``statement_timeout`` and ``lock_timeout`` bound it, so a vacuum
    waiting for a lock (another VACUUM, a CREATE INDEX) gives up too.
    ``vacuum_cost_delay`` throttles it as autovacuum is throttled (a manual VACUUM runs
    flat out by default and takes a core from the claims while it scans the indexes)."""
    if table not in HOT_TABLES:  # the name goes into the statement's text
        raise ValueError(f"{table!r} is not one of taskmill's hot tables")
    millis = str(max(1, round(timeout_seconds * 1000)))
    async with db.autocommit() as raw:
        conn: Any = raw.driver_connection
        try:
            lock = (VACUUM_LOCK_KEY, table)
            if not await conn.fetchval(f"SELECT pg_try_advisory_lock({_KEYS})", *lock):
                return False
            try:
                await conn.execute(
                    "SELECT set_config('statement_timeout', $1, false),"
                    " set_config('lock_timeout', $1, false),"
                    " set_config('vacuum_cost_delay', $2, false)",
                    millis,
                    f"{cost_delay_ms:g}",
                )
                await conn.execute(f'VACUUM (ANALYZE) "{table}"')
            finally:
                # The connection goes back to the pool: leave it as it was.
                await conn.execute(
                    "RESET statement_timeout; RESET lock_timeout; RESET vacuum_cost_delay"
                )
                await conn.fetchval(f"SELECT pg_advisory_unlock({_KEYS})", *lock)
        except asyncio.CancelledError:
            # Stopping: asyncpg cancelled the statement; closing the session as well
            # frees the advisory lock whatever state the cancel left it in.
            raw.invalidate()
            raise
        except Exception as exc:
            error = from_asyncpg(exc, closed=bool(conn.is_closed()))
            if error is None:
                raise
            if isinstance(error, StoreUnavailable):
                raw.invalidate()  # its session state (the lock, the timeouts) is unknown
            raise error from exc
    return True
