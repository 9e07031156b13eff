"""Conformance, a job's way to a worker: created (scheduled, or queued at once), queued by
the populator, claimed, its lease renewed. Each transition on every writer that makes it
today, on SQLite and PostgreSQL (see ``support.py`` for what is checked)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import pytest

from taskmill.core.errors import ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, runs
from taskmill.store import jobs as job_store
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_job, get_job
from tests.conformance.support import (
    CREATED,
    QUEUED,
    STALE,
    STARTED,
    Logged,
    assert_at,
    assert_logged,
    job_row,
    log_mark,
    stale_attempt,
    unchanged,
)
from tests.store import NOW, claim_params, running_job

LATER = NOW + timedelta(seconds=60)

# -- create ----------------------------------------------------------------------------

Creator = Callable[[Database, Sequence[NewJob], bool], Awaitable[list[str]]]


async def _one_by_one(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    made = [
        await create_job(db, n, actor="producer", now=NOW, queue_if_due=queue_if_due) for n in news
    ]
    return [m.job.id for m in made]


async def _keyed(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    keyed = [dataclasses.replace(n, idempotency_key=f"k{i}") for i, n in enumerate(news)]
    return await _one_by_one(db, keyed, queue_if_due)


async def _bulk(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    made = await job_store.create_jobs(
        db, news, actor="producer", now=NOW, queue_if_due=queue_if_due
    )
    return [job.id for job in made]


async def _batched(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    made = [job_store.make_job(n, NOW, "producer", queue_if_due) for n in news]
    await job_store.insert_made(db, made)
    return [m.row["id"] for m in made]


async def _driver_batched(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    made = [job_store.make_job(n, NOW, "producer", queue_if_due) for n in news]
    await store_for(db).insert_jobs(made)
    return [m.row["id"] for m in made]


async def _driver_bulk(db: Database, news: Sequence[NewJob], queue_if_due: bool) -> list[str]:
    made = await store_for(db).create_jobs(
        news, actor="producer", now=NOW, queue_if_due=queue_if_due
    )
    return [job.id for job in made]


CREATORS: dict[str, Creator] = {
    # PostgreSQL: one statement on asyncpg (direct.py); SQLite: Database.write.
    "create_job": _one_by_one,
    # With an idempotency key: insert_job in a transaction, on both.
    "create_job_keyed": _keyed,
    # The recurrence manager's bulk insert: Database.write on both.
    "create_jobs": _bulk,
    # Several jobs in one transaction: the shared form.
    "insert_made": _batched,
    # The insert batcher's, through the driver: PostgreSQL one statement on asyncpg.
    "driver_insert_jobs": _driver_batched,
    # schedule_many's, through the driver: the same statement on PostgreSQL.
    "driver_create_jobs": _driver_bulk,
}


@pytest.mark.parametrize("queue_if_due", [False, True], ids=["scheduled", "queue_if_due"])
@pytest.mark.parametrize("writer", CREATORS)
async def test_create(db: Database, writer: str, queue_if_due: bool) -> None:
    """A job is created ``scheduled`` with ``job.created``; due, waiting for nothing and
    asked to, ``queued`` at once with ``job.queued`` too (by its creator, at creation)."""
    since = await log_mark(db)
    due, later = await CREATORS[writer](
        db, [NewJob("t", NOW, payload={"n": 1}, max_attempts=2), NewJob("t", LATER)], queue_if_due
    )
    created = Logged(EventType.JOB_CREATED, "producer", JobStatus.SCHEDULED, CREATED)
    queued = Logged(EventType.JOB_QUEUED, "producer", JobStatus.QUEUED, QUEUED, JobStatus.SCHEDULED)
    for job_id, status in (
        (due, JobStatus.QUEUED if queue_if_due else JobStatus.SCHEDULED),
        (later, JobStatus.SCHEDULED),
    ):
        row = await job_row(db, job_id)
        assert (row["status"], row["attempt"], row["worker_id"]) == (status, 0, None)
        assert row["created_at"] == row["updated_at"] == NOW
        assert row["queued_at"] == (NOW if status is JobStatus.QUEUED else None)
    assert (await get_job(db, due, ALL_MERCHANTS)).payload == {"n": 1}
    await assert_logged(
        db,
        since,
        {due: [created, queued] if queue_if_due else [created], later: [created]},
    )


async def test_creating_no_jobs_writes_nothing(db: Database) -> None:
    async with unchanged(db):
        assert await store_for(db).create_jobs([], actor="a", now=NOW, queue_if_due=True) == []
        await store_for(db).insert_jobs([])


async def test_create_with_a_used_idempotency_key_changes_nothing(db: Database) -> None:
    """The fence of creation: the key's first job is the answer, nothing is written."""
    first = await create_job(db, NewJob("t", NOW, idempotency_key="k"), actor="a", now=NOW)
    async with unchanged(db):
        again = await create_job(
            db, NewJob("t", LATER, idempotency_key="k"), actor="b", now=NOW, queue_if_due=True
        )
        assert (again.created, again.job) == (False, first.job)
        with pytest.raises(ValidationError):
            await job_store.create_jobs(
                db, [NewJob("t", NOW, idempotency_key="k")], actor="a", now=NOW
            )


# -- scheduled -> queued ---------------------------------------------------------------

Enqueuer = Callable[[Database], Awaitable[tuple[list[Job], datetime | None]]]

ENQUEUERS: dict[str, Enqueuer] = {
    # The shared form: transition() in Database.write.
    "enqueue_due": lambda db: claims.enqueue_due_and_next(db, now=NOW, limit=10, actor="populator"),
    # Through the driver: PostgreSQL one statement on asyncpg.
    "driver_enqueue_due": lambda db: store_for(db).enqueue_due(
        now=NOW, limit=10, actor="populator", merchants_in_turn=False
    ),
    # Merchants in turn, through the driver: the shared form on both.
    "driver_enqueue_due_in_turn": lambda db: store_for(db).enqueue_due(
        now=NOW, limit=10, actor="populator", merchants_in_turn=True
    ),
}


@pytest.mark.parametrize("writer", ENQUEUERS)
async def test_enqueue_due(db: Database, writer: str) -> None:
    """The populator queues the due jobs (oldest first) and nothing else; a second round
    finds nothing to do and writes nothing."""
    ids = [
        (await create_job(db, NewJob("t", at), actor="a", now=NOW)).job.id
        for at in (NOW, NOW - timedelta(seconds=1), LATER)
    ]
    since = await log_mark(db)
    queued, next_due = await ENQUEUERS[writer](db)
    assert ([j.id for j in queued], next_due) == ([ids[1], ids[0]], LATER)
    logged = Logged(
        EventType.JOB_QUEUED, "populator", JobStatus.QUEUED, QUEUED, JobStatus.SCHEDULED
    )
    for job in queued:
        row = await job_row(db, job.id)
        assert job == await get_job(db, job.id, ALL_MERCHANTS) and job.status is JobStatus.QUEUED
        assert_at(db, row["updated_at"], row["queued_at"])
    assert (await get_job(db, ids[2], ALL_MERCHANTS)).status is JobStatus.SCHEDULED
    await assert_logged(db, since, {ids[1]: [logged], ids[0]: [logged]})
    async with unchanged(db):
        assert await ENQUEUERS[writer](db) == ([], LATER)


# -- queued -> running -----------------------------------------------------------------

Claimer = Callable[[Database, str, Sequence[str]], Awaitable[list[Job]]]


def _claim_with(*, by_id: bool = False, cap: int | None = None, driver: bool = False) -> Claimer:
    def claim(db: Database, worker: str, job_ids: Sequence[str]) -> Awaitable[list[Job]]:
        params = dataclasses.replace(
            claim_params(worker),
            job_ids=list(job_ids) if by_id else None,
            max_running_per_merchant=cap,
        )
        return store_for(db).claim(params) if driver else claims.claim(db, params)

    return claim


CLAIMERS: dict[str, Claimer] = {
    # The shared form: transition() in Database.write.
    "claim": _claim_with(),
    "claim_by_id": _claim_with(by_id=True),
    # Through the driver: PostgreSQL one statement on asyncpg (the worker's hinted claim,
    # the broker naming the jobs, is the by-id statement).
    "driver_claim": _claim_with(driver=True),
    "driver_claim_by_id": _claim_with(by_id=True, driver=True),
    # With a per-merchant cap, through the driver: the shared form on both.
    "driver_claim_capped": _claim_with(cap=10, driver=True),
}


@pytest.mark.parametrize("writer", CLAIMERS)
async def test_claim(db: Database, writer: str) -> None:
    """A claim takes queued jobs, highest priority first: ``running``, attempt + 1, the
    worker, a lease from the start, a run; another worker's claim then finds none."""
    ids = [
        (
            await create_job(
                db, NewJob("t", NOW, priority=p), actor="a", now=NOW, queue_if_due=True
            )
        ).job.id
        for p in (0, 5)
    ]
    since = await log_mark(db)
    taken = await CLAIMERS[writer](db, "w1", ids)
    assert [j.id for j in taken] == [ids[1], ids[0]]
    logged = Logged(
        EventType.JOB_STARTED, "worker:w1", JobStatus.RUNNING, STARTED, JobStatus.QUEUED
    )
    for job in taken:
        row = await job_row(db, job.id)
        assert job == await get_job(db, job.id, ALL_MERCHANTS)
        assert (job.status, job.attempt, job.worker_id) == (JobStatus.RUNNING, 1, "w1")
        assert_at(db, row["updated_at"], job.started_at)
        assert job.started_at is not None
        assert_at(db, job.started_at + timedelta(seconds=30), job.lease_expires_at)
        [run] = await runs.list_runs(db, job.id, ALL_MERCHANTS)
        assert (run.attempt, run.worker_id, run.started_at) == (1, "w1", job.started_at)
        assert (run.finished_at, run.outcome) == (None, None)
    await assert_logged(db, since, {ids[1]: [logged], ids[0]: [logged]})
    async with unchanged(db):
        assert await CLAIMERS[writer](db, "w2", ids) == []


# -- heartbeat: lease renewal ------------------------------------------------------------


async def test_heartbeat_renews_the_lease_alone(db: Database) -> None:
    """A heartbeat moves the lease on and nothing else: no event, not even
    ``updated_at`` (the lease is not part of the replayed projection)."""
    job_id = await running_job(db)
    before, since = await job_row(db, job_id), await log_mark(db)
    assert await claims.renew_leases(db, "w1", [(job_id, 1)], 300) == {job_id}
    after = await job_row(db, job_id)
    assert after["lease_expires_at"] > before["lease_expires_at"] + timedelta(seconds=200)
    assert {**after, "lease_expires_at": None} == {**before, "lease_expires_at": None}
    await assert_logged(db, since, {})


@pytest.mark.parametrize("stale", STALE)
async def test_heartbeat_of_a_stale_claim_changes_nothing(db: Database, stale: str) -> None:
    """A stale holder's heartbeat renews nothing, and tells it so: its handler stops."""
    job_id = await running_job(db)
    attempt = await stale_attempt(db, stale, job_id)
    async with unchanged(db):
        held = [(attempt.job_id, attempt.attempt)]
        assert await claims.renew_leases(db, attempt.worker_id, held, 300) == set()
