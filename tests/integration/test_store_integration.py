"""The store on a real SQLite file: transitions, fencing, leases, cancel, replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, func, select

from taskmill.core.errors import InvalidTransition, NotFound, StoreError, ValidationError
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import JobFilter, JobStatus, RunOutcome
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes, runs
from taskmill.store.database import Database
from taskmill.store.drivers import open_store
from taskmill.store.events import iso_text, list_events
from taskmill.store.jobs import NewJob, create_job, get_job, list_jobs
from taskmill.store.postgres.driver import PostgresStore
from taskmill.store.replay import projection_diff
from taskmill.store.schema import events, jobs
from taskmill.store.sqlite.driver import SQLiteStore
from taskmill.store.types import UtcDateTime
from tests.history import check_invariants
from tests.store import NOW
from tests.store import claim_params as _claim
from tests.store import running_job as _running_job
from tests.store import until_expired as _until_expired


async def test_store_integration_create_writes_row_and_event(db: Database) -> None:
    created = await create_job(db, NewJob("t", NOW, payload={"a": 1}), actor="test", now=NOW)
    assert created.created and created.job.status is JobStatus.SCHEDULED
    evs = await list_events(db, ALL_MERCHANTS, EventFilter(job_id=created.job.id))
    assert [e.type for e in evs] == [EventType.JOB_CREATED]
    assert evs[0].data["changes"]["payload"] == {"a": 1}


async def test_store_integration_a_job_due_at_creation_may_be_created_queued(
    db: Database,
) -> None:
    """Asked to (its creator announces it), a job due now and waiting for nothing is
    ``queued`` at once, with both events, so no populator round stands between the
    producer and a worker; the log replays."""
    new = NewJob("t", NOW, payload={"a": 1})
    created = await create_job(db, new, actor="test", now=NOW, queue_if_due=True)
    job = await get_job(db, created.job.id, ALL_MERCHANTS)
    assert created.job.status is job.status is JobStatus.QUEUED
    async with db.read() as conn:
        assert (await conn.execute(select(jobs.c.queued_at))).scalar_one() == NOW
    evs = await list_events(db, ALL_MERCHANTS, EventFilter(job_id=job.id))
    assert [e.type for e in evs] == [EventType.JOB_CREATED, EventType.JOB_QUEUED]
    assert (evs[1].data["from"], evs[1].data["to"], evs[1].actor) == ("scheduled", "queued", "test")
    assert await claims.enqueue_due(db, now=NOW, limit=10, actor="p") == []  # nothing left
    # Not due yet, or held by a dependency: scheduled, for the populator, as without.
    for waits in (
        NewJob("t", NOW + timedelta(seconds=1)),
        NewJob("t", NOW, depends_on=[job.id]),
    ):
        held = await create_job(db, waits, actor="test", now=NOW, queue_if_due=True)
        assert held.job.status is JobStatus.SCHEDULED
    assert await projection_diff(db) == []
    await check_invariants(db)


async def test_store_integration_idempotency_key_returns_same_job(db: Database) -> None:
    first = await create_job(db, NewJob("t", NOW, idempotency_key="k1"), actor="a", now=NOW)
    second = await create_job(db, NewJob("t", NOW, idempotency_key="k1"), actor="a", now=NOW)
    assert not second.created and second.job.id == first.job.id
    assert len(await list_jobs(db, ALL_MERCHANTS, JobFilter())) == 1


async def test_store_integration_unknown_dependency_rejected_without_row(db: Database) -> None:
    with pytest.raises(ValidationError) as err:
        await create_job(db, NewJob("t", NOW, depends_on=["nope"]), actor="a", now=NOW)
    assert err.value.field == "depends_on"
    async with db.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(jobs))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(events))).scalar_one() == 0


async def test_store_integration_enqueue_only_due_jobs(db: Database) -> None:
    due = await create_job(db, NewJob("t", NOW), actor="a", now=NOW)
    await create_job(db, NewJob("t", NOW + timedelta(seconds=5)), actor="a", now=NOW)
    queued = await claims.enqueue_due(db, now=NOW, limit=10, actor="p")
    assert [j.id for j in queued] == [due.job.id]
    assert await claims.next_due_at(db) == NOW + timedelta(seconds=5)


async def test_store_integration_enqueue_reads_the_next_due_time_in_its_transaction(
    db: Database,
) -> None:
    """The populator's next wake-up comes with its batch: the earliest job still
    scheduled after the batch, or None when the batch was full (it comes back at once)."""
    for seconds in (0, 0, 7, 3):
        await create_job(db, NewJob("t", NOW + timedelta(seconds=seconds)), actor="a", now=NOW)
    full, after_full = await claims.enqueue_due_and_next(db, now=NOW, limit=1, actor="p")
    assert len(full) == 1 and after_full is None
    rest, later = await claims.enqueue_due_and_next(db, now=NOW, limit=10, actor="p")
    assert len(rest) == 1 and later == NOW + timedelta(seconds=3)
    last, nothing = await claims.enqueue_due_and_next(
        db, now=NOW + timedelta(seconds=9), limit=10, actor="p"
    )
    assert len(last) == 2 and nothing is None


async def test_store_integration_enqueue_logs_what_it_wrote(db: Database) -> None:
    """The populator's round (one statement on PostgreSQL) returns the jobs it queued,
    oldest first, with ``job.queued`` events that match the rows; a job held by a
    dependency is neither queued nor its next due time; the log replays."""
    later = await create_job(db, NewJob("t", NOW + timedelta(seconds=3)), actor="a", now=NOW)
    older = await create_job(db, NewJob("t", NOW - timedelta(seconds=2)), actor="a", now=NOW)
    newer = await create_job(db, NewJob("t", NOW - timedelta(seconds=1)), actor="a", now=NOW)
    held = NewJob("t", NOW + timedelta(seconds=1), depends_on=[later.job.id])
    await create_job(db, held, actor="a", now=NOW)
    queued, next_due = await claims.enqueue_due_and_next(
        db, now=NOW + timedelta(seconds=1), limit=10, actor="populator:x"
    )
    assert [j.id for j in queued] == [older.job.id, newer.job.id]
    assert next_due == NOW + timedelta(seconds=3)
    for job in queued:
        assert job == await get_job(db, job.id, ALL_MERCHANTS) and job.status is JobStatus.QUEUED
        async with db.read() as conn:
            at = (await conn.execute(select(jobs.c.queued_at).where(jobs.c.id == job.id))).one()[0]
        [event] = await list_events(
            db, ALL_MERCHANTS, EventFilter(job_id=job.id, types=[EventType.JOB_QUEUED])
        )
        assert (event.actor, event.occurred_at) == ("populator:x", at)
        assert event.data == {
            "from": "scheduled",
            "to": "queued",
            "changes": {"status": "queued", "queued_at": at.isoformat()},
        }
    assert await claims.enqueue_due_and_next(db, now=NOW, limit=10, actor="p") == (
        [],
        NOW + timedelta(seconds=3),
    )
    assert await projection_diff(db) == []
    await check_invariants(db)


async def test_store_integration_dependency_holds_job_until_upstream_succeeds(
    db: Database,
) -> None:
    upstream = await create_job(db, NewJob("t", NOW), actor="a", now=NOW)
    down = await create_job(db, NewJob("t", NOW, depends_on=[upstream.job.id]), actor="a", now=NOW)
    assert [j.id for j in await claims.enqueue_due(db, now=NOW, limit=10, actor="p")] == [
        upstream.job.id
    ]
    [job] = await claims.claim(db, _claim())
    await outcomes.succeed(db, outcomes.Attempt(job.id, 1, "w1"), None)
    assert [j.id for j in await claims.enqueue_due(db, now=NOW, limit=10, actor="p")] == [
        down.job.id
    ]


async def test_store_integration_claim_sets_lease_attempt_and_run(db: Database) -> None:
    job_id = await _running_job(db)
    job = await get_job(db, job_id, ALL_MERCHANTS)
    assert job.status is JobStatus.RUNNING and job.attempt == 1 and job.worker_id == "w1"
    assert job.lease_expires_at is not None and job.lease_expires_at > datetime.now(UTC)
    [run] = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert run.attempt == 1 and run.outcome is None


async def test_store_integration_claim_logs_what_it_wrote(db: Database) -> None:
    """The claim's ``job.started`` events and runs match the rows it changed (PostgreSQL
    builds them in SQL, in one statement), jobs come highest priority first, only the
    hinted ids are taken, and the log replays to the table."""
    made = [
        await create_job(db, NewJob("t", NOW, priority=p), actor="a", now=NOW) for p in (0, 5, 1)
    ]
    await claims.enqueue_due(db, now=NOW, limit=10, actor="p")
    hinted = [made[0].job.id, made[1].job.id]
    params = claims.ClaimParams("w1", 10, 30.0, ["default"], ["t"], job_ids=hinted)
    taken = await claims.claim(db, params)
    assert [j.id for j in taken] == [made[1].job.id, made[0].job.id]
    for job in taken:
        stored = await get_job(db, job.id, ALL_MERCHANTS)
        assert stored == job
        [started] = await list_events(
            db, ALL_MERCHANTS, EventFilter(job_id=job.id, types=[EventType.JOB_STARTED])
        )
        assert started.actor == "worker:w1" and started.merchant_id == job.merchant_id
        assert started.data == {
            "from": "queued",
            "to": "running",
            "changes": {
                "status": "running",
                "worker_id": "w1",
                "attempt": 1,
                "lease_expires_at": job.lease_expires_at and job.lease_expires_at.isoformat(),
                "started_at": job.started_at and job.started_at.isoformat(),
            },
        }
        assert started.occurred_at == job.started_at
        [run] = await runs.list_runs(db, job.id, ALL_MERCHANTS)
        assert (run.attempt, run.worker_id, run.started_at) == (1, "w1", job.started_at)
    assert (await get_job(db, made[2].job.id, ALL_MERCHANTS)).status is JobStatus.QUEUED
    assert await projection_diff(db) == []


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 0, 0, 120000, tzinfo=UTC),
        datetime(2026, 11, 23, 12, 0, 0, 7, tzinfo=UTC),
    ],
)
async def test_store_integration_timestamps_written_in_sql_read_as_python_writes_them(
    postgres_url: str, moment: datetime
) -> None:
    """Events built in SQL carry timestamps exactly as ``datetime.isoformat()`` (whole
    seconds without a fraction, trailing zeros kept), so replay compares them as text."""
    db = Database.from_url(postgres_url)
    try:
        async with db.read() as conn:
            value = bindparam("moment", moment, type_=UtcDateTime())
            text_ = (await conn.execute(select(iso_text(value)))).scalar_one()
    finally:
        await db.close()
    assert text_ == moment.isoformat()


async def test_store_integration_claim_is_exclusive(db: Database) -> None:
    for _ in range(5):
        await create_job(db, NewJob("t", NOW), actor="a", now=NOW)
    await claims.enqueue_due(db, now=NOW, limit=10, actor="p")
    first = await claims.claim(db, _claim("w1", limit=3))
    second = await claims.claim(db, _claim("w2", limit=10))
    assert len(first) == 3 and len(second) == 2
    assert not {j.id for j in first} & {j.id for j in second}


async def test_store_integration_zombie_outcome_changes_nothing(db: Database) -> None:
    job_id = await _running_job(db, lease=0.05)
    # The lease lapses (database clock); the watcher rescues; another worker takes over.
    await _until_expired(db)
    expired = await claims.expire_leases(db, limit=10, actor="watcher")
    assert [j.id for j in expired.rescued] == [job_id]
    await claims.enqueue_due(db, now=datetime.now(UTC), limit=10, actor="p")
    [taken] = await claims.claim(db, _claim("w2"))
    assert taken.attempt == 2
    zombie = outcomes.Attempt(job_id, 1, "w1")
    assert not await outcomes.succeed(db, zombie, "late")
    assert not await outcomes.fail(db, zombie, outcomes.Failure("late"))
    assert await claims.renew_leases(db, "w1", [(job_id, 1)], 30) == set()
    assert await outcomes.succeed(db, outcomes.Attempt(job_id, 2, "w2"), "ok")
    job = await get_job(db, job_id, ALL_MERCHANTS)
    assert job.status is JobStatus.SUCCEEDED and job.result == "ok" and job.attempt == 2
    lost, won = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert lost.outcome is RunOutcome.LOST and won.outcome is RunOutcome.SUCCEEDED
    await check_invariants(db)


async def test_store_integration_lease_expiry_on_last_attempt_fails_job(db: Database) -> None:
    created = await create_job(db, NewJob("t", NOW, max_attempts=1), actor="a", now=NOW)
    await claims.enqueue_due(db, now=NOW, limit=10, actor="p")
    await claims.claim(db, _claim(lease=0.05))
    await _until_expired(db)
    expired = await claims.expire_leases(db, limit=10, actor="watcher")
    assert [j.id for j in expired.failed] == [created.job.id]
    job = await get_job(db, created.job.id, ALL_MERCHANTS)
    assert job.status is JobStatus.FAILED and job.last_error == claims.WORKER_LOST
    await check_invariants(db)


async def test_store_integration_cancel_running_job_fences_worker(db: Database) -> None:
    job_id = await _running_job(db)
    cancelled = await outcomes.cancel(
        db, job_id, reason="no longer needed", actor="user", merchant_id=ALL_MERCHANTS
    )
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_reason == "no longer needed"
    assert not await outcomes.succeed(db, outcomes.Attempt(job_id, 1, "w1"), "late")
    assert await claims.renew_leases(db, "w1", [(job_id, 1)], 30) == set()
    [run] = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert run.outcome is RunOutcome.CANCELLED
    evs = await list_events(
        db, ALL_MERCHANTS, EventFilter(job_id=job_id, types=[EventType.JOB_CANCELLED])
    )
    assert evs[0].data["from"] == "running"
    await check_invariants(db)


async def test_store_integration_cancel_finished_job_is_invalid(db: Database) -> None:
    job_id = await _running_job(db)
    await outcomes.succeed(db, outcomes.Attempt(job_id, 1, "w1"), None)
    with pytest.raises(InvalidTransition):
        await outcomes.cancel(db, job_id, reason="x", actor="user", merchant_id=ALL_MERCHANTS)
    with pytest.raises(NotFound):
        await outcomes.cancel(
            db,
            "00000000-0000-0000-0000-00000000dead",
            reason="x",
            actor="u",
            merchant_id=ALL_MERCHANTS,
        )


async def test_store_integration_other_merchant_sees_not_found(db: Database) -> None:
    created = await create_job(db, NewJob("t", NOW), actor="a", now=NOW)
    other = "11111111-1111-1111-1111-111111111111"
    with pytest.raises(NotFound):
        await get_job(db, created.job.id, merchant_id=other)
    with pytest.raises(NotFound):
        await outcomes.cancel(db, created.job.id, reason="x", actor="u", merchant_id=other)


async def test_store_integration_retry_then_release_then_manual_retry(db: Database) -> None:
    job_id = await _running_job(db)
    retry_at = NOW + timedelta(seconds=60)
    failure = outcomes.Failure("boom", retry_at=retry_at)
    assert await outcomes.fail(db, outcomes.Attempt(job_id, 1, "w1"), failure)
    job = await get_job(db, job_id, ALL_MERCHANTS)
    assert job.status is JobStatus.SCHEDULED and job.run_at == retry_at
    await claims.enqueue_due(db, now=retry_at, limit=10, actor="p")
    await claims.claim(db, _claim())
    assert await outcomes.release(db, outcomes.Attempt(job_id, 2, "w1"))
    released = await get_job(db, job_id, ALL_MERCHANTS)
    assert released.status is JobStatus.SCHEDULED and released.max_attempts == 4
    await claims.enqueue_due(db, now=datetime.now(UTC) + timedelta(seconds=1), limit=10, actor="p")
    await claims.claim(db, _claim())
    assert await outcomes.fail(db, outcomes.Attempt(job_id, 3, "w1"), outcomes.Failure("final"))
    assert (await get_job(db, job_id, ALL_MERCHANTS)).status is JobStatus.FAILED
    again = await outcomes.retry_failed(
        db, job_id, actor="user", run_at=NOW, merchant_id=ALL_MERCHANTS
    )
    assert again.status is JobStatus.SCHEDULED and again.max_attempts == 4


async def test_store_integration_replay_matches_table_after_mixed_workload(db: Database) -> None:
    ids = [
        (
            await create_job(db, NewJob("t", NOW, payload=i, max_attempts=2), actor="a", now=NOW)
        ).job.id
        for i in range(12)
    ]
    await outcomes.cancel(
        db, ids[0], reason="early", actor="user", merchant_id=ALL_MERCHANTS
    )  # cancelled while scheduled
    await claims.enqueue_due(db, now=NOW, limit=100, actor="p")
    await outcomes.cancel(
        db, ids[1], reason="queued", actor="user", merchant_id=ALL_MERCHANTS
    )  # cancelled while queued
    # In payload order: which jobs retry (and so which are left to expire) must not
    # depend on the claim order, which follows the random job ids.
    claimed = sorted(await claims.claim(db, _claim(limit=100)), key=lambda j: int(j.payload))
    for i, job in enumerate(claimed):
        attempt = outcomes.Attempt(job.id, job.attempt, "w1")
        if i % 3 == 0:
            await outcomes.succeed(db, attempt, {"i": i})
        elif i % 3 == 1:
            await outcomes.fail(db, attempt, outcomes.Failure("retry", retry_at=NOW))
        else:
            await outcomes.fail(db, attempt, outcomes.Failure("fatal"))
    await claims.enqueue_due(db, now=NOW, limit=100, actor="p")
    for job in await claims.claim(db, _claim(limit=100, lease=0.05)):
        if job.attempt == 2 and int(job.payload) % 2 == 0:
            await outcomes.succeed(db, outcomes.Attempt(job.id, 2, "w1"), "second time")
    await _until_expired(db)
    await claims.expire_leases(db, limit=100, actor="watcher")  # the rest die on attempt 2
    statuses = {j.status for j in await list_jobs(db, ALL_MERCHANTS, JobFilter())}
    assert statuses == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert await projection_diff(db) == []


async def test_store_integration_replay_detects_tampering(db: Database) -> None:
    created = await create_job(db, NewJob("t", NOW), actor="a", now=NOW)
    async with db.transaction() as conn:
        await conn.execute(jobs.update().values(priority=99))
    diffs = await projection_diff(db)
    assert diffs == [f"{created.job.id}.priority: events=0 table=99"]


async def test_store_integration_next_due_ignores_jobs_held_by_dependencies(db: Database) -> None:
    upstream = await create_job(db, NewJob("t", NOW + timedelta(hours=1)), actor="a", now=NOW)
    await create_job(db, NewJob("t", NOW, depends_on=[upstream.job.id]), actor="a", now=NOW)
    # The held job is past due, but only the upstream's run_at may wake the populator.
    assert await claims.next_due_at(db) == NOW + timedelta(hours=1)


async def test_store_integration_succeed_many_is_fenced_and_replayable(db: Database) -> None:
    for i in range(3):
        await create_job(db, NewJob("t", NOW, payload=i, max_attempts=2), actor="a", now=NOW)
    await claims.enqueue_due(db, now=NOW, limit=10, actor="p")
    first, second, third = await claims.claim(db, _claim())
    zombie = outcomes.Attempt(second.id, 1, "someone-else")  # not the claim's worker
    batch = [
        outcomes.Success(outcomes.Attempt(first.id, 1, "w1"), {"n": 1}, 0.5),
        outcomes.Success(zombie, "late", 0.1),
        outcomes.Success(outcomes.Attempt(third.id, 1, "w1"), [1, 2], None),
    ]
    async with db.transaction() as conn:
        assert await outcomes.succeed_many(conn, db.dialect, batch) == [True, False, True]
    assert (await get_job(db, first.id, ALL_MERCHANTS)).result == {"n": 1}
    assert (await get_job(db, second.id, ALL_MERCHANTS)).status is JobStatus.RUNNING  # untouched
    assert (await get_job(db, third.id, ALL_MERCHANTS)).result == [1, 2]
    [run] = await runs.list_runs(db, first.id, ALL_MERCHANTS)
    assert run.outcome is RunOutcome.SUCCEEDED and run.duration_seconds == 0.5
    assert await projection_diff(db) == []


async def test_a_job_postgresql_refuses_leaves_neither_row_nor_event(postgres_url: str) -> None:
    """On PostgreSQL a plain ``create_job`` is one autocommitted statement (the job, its
    event, the wake-up): when only the event is refused (an actor longer than the
    column), the job is not stored either; the next job is stored whole."""
    db = Database.from_url(postgres_url)
    try:
        with pytest.raises(StoreError, match="too long"):
            await create_job(db, NewJob("t", NOW), actor="x" * 201, now=NOW)
        async with db.read() as conn:
            stored = [
                (await conn.execute(select(func.count()).select_from(t))).scalar_one()
                for t in (jobs, events)
            ]
        assert stored == [0, 0]
        made = await create_job(db, NewJob("t", NOW, payload={"k": "ok"}), actor="t", now=NOW)
        assert made.created and (await get_job(db, made.job.id, ALL_MERCHANTS)).payload == {
            "k": "ok"
        }
        logged = await list_events(db, ALL_MERCHANTS, EventFilter(job_id=made.job.id))
        assert [e.type for e in logged] == [EventType.JOB_CREATED]
        assert await projection_diff(db) == []
    finally:
        await db.close()


async def test_each_database_gets_its_driver(sqlite_url: str, postgres_url: str) -> None:
    """A URL picks its driver; SQLite's writes queue on the process's write lock (its
    handle has no autocommit bypass)."""
    lite, pg = open_store(sqlite_url), open_store(postgres_url)
    try:
        assert isinstance(lite, SQLiteStore) and not lite.notifies
        assert not hasattr(lite.db, "autocommit")
        assert isinstance(pg, PostgresStore) and pg.notifies
    finally:
        await lite.close()
        await pg.close()
