"""The PostgreSQL driver: the shared statements, with the hot transitions written by
one statement each (``statements.py``): in autocommit on asyncpg itself (``direct.py``)
when the statement is the whole write, or in a transaction beside the rest of it (the
jobs a per-merchant cap or merchants' turns picked, failures in the same batch)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.jobs import Job
from taskmill.core.table_health import TableStats
from taskmill.store import claims, jobs, outcomes, rate_limits
from taskmill.store.driver import SqlStore
from taskmill.store.postgres import listener, maintenance, statements
from taskmill.store.postgres.database import PostgresDatabase
from taskmill.store.protocol import WakeupListener


class PostgresStore(SqlStore):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self.pg = db

    def wakeup_listener(self, listen_url: str | None) -> WakeupListener | None:
        if listen_url is None:  # behind a transaction pooler without a direct URL
            return None
        return functools.partial(listener.listen, listen_url)

    async def insert_jobs(self, made: Sequence[jobs.MadeJob]) -> None:
        await statements.insert_jobs(self.pg, made)

    async def enqueue_due(
        self, *, now: datetime, limit: int, actor: str, merchants_in_turn: bool
    ) -> tuple[list[Job], datetime | None]:
        if not merchants_in_turn:
            return await statements.enqueue_due_and_next(self.pg, now=now, limit=limit, actor=actor)

        async def in_turn(conn: AsyncConnection) -> tuple[list[Job], datetime | None]:
            ids = await claims.pick_due(conn, self.pg, now, limit, merchants_in_turn=True)
            return await statements.enqueue_picked(conn, ids, now=now, limit=limit, actor=actor)

        return await self.pg.write(in_turn)

    async def claim(self, params: claims.ClaimParams) -> list[Job]:
        if claims.nothing_to_claim(params):
            return []
        cap = params.max_running_per_merchant
        if cap is None:
            return await statements.claim(self.pg, params)

        async def fair(conn: AsyncConnection) -> list[Job]:
            ids = await claims.pick_fair(conn, self.pg, params, cap)
            return await statements.claim_picked(conn, params, ids)

        return await self.pg.write(fair)

    async def claim_rate_limited(self, params: claims.ClaimParams) -> rate_limits.Claimed:
        # The picked jobs started by the claim's one statement, in the bucket's transaction.
        return await rate_limits.claim(self.pg, params, statements.claim_picked)

    async def _record_successes(self, successes: Sequence[outcomes.Success]) -> list[bool]:
        return await statements.record_successes(self.pg, successes)

    async def _succeed_in(
        self, conn: AsyncConnection, successes: Sequence[outcomes.Success]
    ) -> list[bool]:
        return await statements.succeed_in(conn, successes)

    async def table_stats(self, tables: Sequence[str]) -> list[TableStats] | None:
        return await maintenance.table_stats(self.pg, tables)

    async def vacuum_table(
        self, table: str, *, timeout_seconds: float, cost_delay_ms: float = 0.0
    ) -> bool:
        return await maintenance.vacuum(
            self.pg, table, timeout_seconds=timeout_seconds, cost_delay_ms=cost_delay_ms
        )
