"""The PostgreSQL driver: the shared statements, with the hot transitions replaced by
one statement each in autocommit (``statements.py``, run on asyncpg by ``direct.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from taskmill.core.jobs import Job
from taskmill.store import claims, jobs, outcomes
from taskmill.store.driver import SqlStore
from taskmill.store.postgres import statements
from taskmill.store.postgres.database import PostgresDatabase


class PostgresStore(SqlStore):
    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self.pg = db

    async def insert_jobs(self, made: Sequence[jobs.MadeJob]) -> None:
        await statements.insert_jobs(self.pg, made)

    async def enqueue_due(
        self, *, now: datetime, limit: int, actor: str, merchants_in_turn: bool
    ) -> tuple[list[Job], datetime | None]:
        if merchants_in_turn:  # a window over merchants: the shared form
            return await super().enqueue_due(
                now=now, limit=limit, actor=actor, merchants_in_turn=True
            )
        return await statements.enqueue_due_and_next(self.pg, now=now, limit=limit, actor=actor)

    async def claim(self, params: claims.ClaimParams) -> list[Job]:
        if params.limit <= 0 or not params.task_types or not params.queues:
            return []
        if params.max_running_per_merchant is not None:  # fair shares: the shared form
            return await super().claim(params)
        return await statements.claim(self.pg, params)

    async def record_successes(self, successes: Sequence[outcomes.Success]) -> list[bool]:
        return await statements.record_successes(self.pg, successes)
