"""Group commit on a real database: shared transactions, isolated failures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.errors import Conflict
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.group_commit import GroupCommitter
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job, get_job
from taskmill.store.schema import jobs

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def test_group_commit_integration_concurrent_writes_all_land(db: Database) -> None:
    ids = [(await create_job(db, NewJob("t", NOW), actor="a", now=NOW)).job.id for _ in range(50)]
    committer = GroupCommitter(db)

    def bump(job_id: str) -> object:
        async def write(conn: AsyncConnection) -> bool:
            result = await conn.execute(jobs.update().where(jobs.c.id == job_id).values(priority=7))
            return result.rowcount == 1

        return write

    results = await asyncio.gather(*(committer.write(bump(i)) for i in ids))  # type: ignore[arg-type]
    await committer.close()
    assert results == [True] * 50
    assert {(await get_job(db, i, ALL_MERCHANTS)).priority for i in ids} == {7}


async def test_group_commit_integration_one_failure_spares_the_others(db: Database) -> None:
    good = (await create_job(db, NewJob("t", NOW), actor="a", now=NOW)).job.id
    committer = GroupCommitter(db)

    async def fine(conn: AsyncConnection) -> bool:
        await conn.execute(jobs.update().where(jobs.c.id == good).values(priority=3))
        return True

    async def broken(conn: AsyncConnection) -> bool:
        await conn.execute(
            text("INSERT INTO merchants (id, name, created_at) VALUES (NULL, NULL, NULL)")
        )
        return True

    outcomes = await asyncio.gather(
        committer.write(fine), committer.write(broken), return_exceptions=True
    )
    await committer.close()
    assert outcomes[0] is True
    assert isinstance(outcomes[1], Conflict)
    assert (await get_job(db, good, ALL_MERCHANTS)).priority == 3
    alone = GroupCommitter(db)
    with pytest.raises(Conflict):
        await alone.write(broken)
    await alone.close()
