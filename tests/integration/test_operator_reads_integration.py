"""The operator's reads on both databases: ``Store.queue_depths`` (every merchant's
unfinished jobs per queue and the live workers serving each, finished jobs and stopped
workers left out, bounded) and jobs listed newest first, page after page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskmill.core.jobs import JobFilter
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob
from taskmill.store.queue_depths import QueueDepth
from tests.store import NOW, claim_params


async def test_queue_depths_count_unfinished_jobs_and_live_workers(db: Database) -> None:
    store = store_for(db)

    async def add(queue: str, *, later: bool = False) -> str:
        new = NewJob("t", NOW + timedelta(hours=1) if later else NOW, queue=queue)
        return (await store.create_job(new, actor="a", now=NOW, queue_if_due=False)).job.id

    for queue in ("default", "default", "default", "reports", "reports"):
        await add(queue)
    done = await add("done")
    await store.cancel(ALL_MERCHANTS, done, reason="finished jobs are not counted", actor="a")
    await add("later", later=True)
    await store.enqueue_due(now=NOW, limit=100, actor="p", merchants_in_turn=False)
    assert len(await store.claim(claim_params(limit=1))) == 1  # one of default's, running
    await store.register_worker("w1", "h", 1, ["default", "mail"], 4, ["t"])
    await store.register_worker("w2", "h", 2, ["mail"], 4, ["t"])
    await store.register_worker("w3", "h", 3, ["gone"], 4, ["t"])
    await store.stop_worker("w3")

    depths = await store.queue_depths(limit=1000)

    assert depths == [
        QueueDepth("default", scheduled=0, queued=2, running=1, workers=1),
        QueueDepth("later", scheduled=1, queued=0, running=0),
        QueueDepth("mail", workers=2),
        QueueDepth("reports", scheduled=0, queued=2, running=0),
    ]
    assert await store.queue_depths(limit=2) == depths[:2]
    with pytest.raises(ValueError, match="limit"):
        await store.queue_depths(limit=1001)


async def test_jobs_newest_first_page_towards_older_jobs(db: Database) -> None:
    store = store_for(db)
    made = []
    for i in range(5):  # two share a created_at: the id breaks the tie
        at = NOW + timedelta(seconds=min(i, 3))
        new = NewJob("t", at)
        made.append((await store.create_job(new, actor="a", now=at, queue_if_due=False)).job)
    newest = sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)
    first = await store.list_jobs(ALL_MERCHANTS, JobFilter(limit=2, newest_first=True))
    last = first[-1]
    rest = await store.list_jobs(
        ALL_MERCHANTS, JobFilter(limit=10, newest_first=True, after=(last.created_at, last.id))
    )
    assert [j.id for j in first + rest] == [j.id for j in newest]
    oldest = await store.list_jobs(ALL_MERCHANTS, JobFilter(limit=10))
    assert [j.id for j in oldest] == [j.id for j in reversed(newest)]
