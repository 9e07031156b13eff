"""Replaying the event log in batches of job ids (``store/replay.py``), on both databases:
every job is compared exactly once whatever the batch size, and a tampered row, a row
without events and events without a row are each reported."""

from __future__ import annotations

from sqlalchemy import delete, update

from taskmill.store import claims
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job
from taskmill.store.replay import count_jobs, projection_diff, verify_batches
from taskmill.store.schema import events, jobs
from tests.store import NOW


async def _jobs(db: Database, n: int) -> list[str]:
    ids = [(await create_job(db, NewJob("t", NOW), actor="a", now=NOW)).job.id for _ in range(n)]
    await claims.enqueue_due(db, now=NOW, limit=3, actor="p")  # some have two events
    return sorted(ids)


async def test_batches_compare_every_job_once(db: Database) -> None:
    ids = await _jobs(db, 7)
    for size in (1, 2, 3, 7, 1000):
        batches = [b async for b in verify_batches(db, batch_size=size)]
        assert sum(b.checked for b in batches) == 7, size
        assert all(b.checked <= size and b.diffs == [] for b in batches), size
    assert await count_jobs(db) == len(ids)


async def test_batches_report_every_kind_of_difference(db: Database) -> None:
    ids = await _jobs(db, 6)
    tampered, rowless, eventless = ids[1], ids[3], ids[4]
    async with db.transaction() as conn:
        await conn.execute(update(jobs).where(jobs.c.id == tampered).values(priority=99))
        await conn.execute(delete(jobs).where(jobs.c.id == rowless))
        await conn.execute(delete(events).where(events.c.job_id == eventless))
    want = sorted(
        [
            f"{tampered}.priority: events=0 table=99",
            f"{rowless}: only in events",
            f"{eventless}: only in table",
        ]
    )
    for size in (1, 2, 4):
        batches = [b async for b in verify_batches(db, batch_size=size)]
        assert [d for b in batches for d in b.diffs] == want, size
        assert sum(b.checked for b in batches) == 6, size
    assert await projection_diff(db) == want
