"""Conformance, the reads behind the jobs list and the failures view: keyset pages
newest or oldest first, search, and the newest failed jobs. SQLite and PostgreSQL,
through each driver (``Store``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import JobFilter
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import outcomes
from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.jobs import NewJob, create_job
from tests.store import NOW, running_job

OTHER_MERCHANT = "11111111-1111-1111-1111-111111111111"


async def _make(db: Database, seconds: int, payload: object = None, task: str = "t") -> str:
    at = NOW + timedelta(seconds=seconds)
    created = await create_job(db, NewJob(task, at, payload=payload), actor="a", now=at)
    return created.job.id


async def _walk(store: SqlStore, *, newest_first: bool, search: str | None = None) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        flt = JobFilter(limit=2, after=after, newest_first=newest_first, search=search)
        page = await store.list_jobs(ALL_MERCHANTS, flt)
        seen += [j.id for j in page]
        if len(page) < 2:
            return seen
        after = (page[-1].created_at, page[-1].id)


async def test_list_jobs_pages_in_both_orders(db: Database, store: SqlStore) -> None:
    made = [await _make(db, s) for s in (0, 1, 1, 1, 2)]  # three share an instant
    oldest = [made[0], *sorted(made[1:4]), made[4]]
    assert await _walk(store, newest_first=False) == oldest
    assert await _walk(store, newest_first=True) == oldest[::-1]


async def test_list_jobs_search(db: Database, store: SqlStore) -> None:
    wild = await _make(db, 0, {"text": "50% OFF_today"})
    tame = await _make(db, 1, {"text": "50x offxtoday"}, task="mail.Send")
    escaped = await _make(db, 2, {"text": 'a "quoted" back\\slash, Ünïcode'})

    async def found(text: str) -> set[str]:
        return {j.id for j in await store.list_jobs(ALL_MERCHANTS, JobFilter(search=text))}

    assert await found(wild) == {wild}
    assert await found("off") == {wild, tame}
    assert await found("% off_") == {wild}
    assert await found("MAIL.send") == {tame}
    assert await found('"quoted" back\\slash') == {escaped}
    # Letters beyond ASCII match as written (SQLite's lower() folds ASCII only; it
    # stores them escaped, which the search also tries).
    assert await found("Ünïcode") == {escaped}
    assert await _walk(store, newest_first=True, search="off") == [tame, wild]
    for bad in ("", "x" * 201):
        with pytest.raises(ValidationError) as refused:
            await store.list_jobs(ALL_MERCHANTS, JobFilter(search=bad))
        assert refused.value.field == "q"


async def test_newest_failed_jobs(db: Database, store: SqlStore) -> None:
    failed = []
    for error in ("first\nline two", "x" * 2000):
        job_id = await running_job(db, max_attempts=1)
        assert await outcomes.fail(db, outcomes.Attempt(job_id, 1, "w1"), outcomes.Failure(error))
        failed.append(job_id)
    await _make(db, 0)  # not failed
    found = await store.newest_failed_jobs(ALL_MERCHANTS, since=None, limit=10)
    assert [f.id for f in found] == failed[::-1]
    assert found[1].last_error == "first\nline two"
    assert found[0].last_error == "x" * 500  # the head only
    assert all(f.task_type == "t" and f.finished_at is not None for f in found)
    [newest] = await store.newest_failed_jobs(ALL_MERCHANTS, since=None, limit=1)
    assert newest.id == failed[1]
    assert found[0].finished_at is not None
    since = await store.newest_failed_jobs(ALL_MERCHANTS, since=found[0].finished_at, limit=10)
    assert [f.id for f in since] == [failed[1]]
    assert await store.newest_failed_jobs(OTHER_MERCHANT, since=None, limit=10) == []
    with pytest.raises(ValidationError):
        await store.newest_failed_jobs(ALL_MERCHANTS, since=None, limit=0)
