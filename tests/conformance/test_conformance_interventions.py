"""Conformance, what users and the dependency checker do to a job: cancel (from
``scheduled``, ``queued``, ``running``), retry a failed job, and failure propagation
to waiting dependents, whichever writer ended the upstream job. SQLite and PostgreSQL."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from taskmill.core.dependencies import CASCADE_ACTOR, cascade_reason
from taskmill.core.errors import InvalidTransition, NotFound
from taskmill.core.events import EventType
from taskmill.core.jobs import DependencyFailurePolicy, JobStatus, RunOutcome
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store import claims, outcomes, runs
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job, get_job
from tests.conformance.support import (
    CANCELLED,
    CASCADE_CANCELLED,
    FAILED,
    FAILED_LOST,
    RETRIED,
    Logged,
    assert_at,
    assert_logged,
    expire,
    failed_logged,
    job_row,
    log_mark,
    unchanged,
)
from tests.store import NOW, claim_params, running_job

OTHER_MERCHANT = "11111111-1111-1111-1111-111111111111"


async def _job_in(db: Database, status: JobStatus, *, max_attempts: int = 1) -> str:
    """A job of ``w1``'s brought to ``status`` by the usual writers."""
    if status is JobStatus.RUNNING:
        return await running_job(db, max_attempts=max_attempts)
    new = NewJob("t", NOW, max_attempts=max_attempts)
    queue = status is JobStatus.QUEUED
    return (await create_job(db, new, actor="a", now=NOW, queue_if_due=queue)).job.id


# -- cancel ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING])
async def test_cancel(db: Database, status: JobStatus) -> None:
    """``cancelled`` with the reason, ``finished_at`` the event's instant, no lease; a
    running job keeps its worker and attempt, and its run is closed ``cancelled``."""
    job_id = await _job_in(db, status)
    since = await log_mark(db)
    job = await outcomes.cancel(
        db, job_id, reason="not needed", actor="user", merchant_id=ALL_MERCHANTS
    )
    row = await job_row(db, job_id)
    assert job == await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.cancel_reason, job.lease_expires_at) == (
        JobStatus.CANCELLED,
        "not needed",
        None,
    )
    running = status is JobStatus.RUNNING
    assert (job.worker_id, job.attempt) == (("w1", 1) if running else (None, 0))
    assert_at(db, row["updated_at"], job.finished_at)
    closed = [(r.outcome, r.error) for r in await runs.list_runs(db, job_id, ALL_MERCHANTS)]
    assert closed == ([(RunOutcome.CANCELLED, "not needed")] if running else [])
    logged = Logged(
        EventType.JOB_CANCELLED,
        "user",
        JobStatus.CANCELLED,
        CANCELLED,
        status,
        {"reason": "not needed"},
    )
    await assert_logged(db, since, {job_id: [logged]})


@pytest.mark.parametrize("ended", ["succeeded", "cancelled", "other_merchant"])
async def test_cancel_refused_changes_nothing(db: Database, ended: str) -> None:
    """A finished job cannot be cancelled (``InvalidTransition`` naming both statuses);
    another merchant's reads as missing (``NotFound``); nothing is written either way."""
    job_id = await running_job(db)
    merchant: MerchantScope = ALL_MERCHANTS
    if ended == "succeeded":
        assert await outcomes.succeed(db, outcomes.Attempt(job_id, 1, "w1"), None)
    elif ended == "cancelled":
        await outcomes.cancel(db, job_id, reason="first", actor="user", merchant_id=ALL_MERCHANTS)
    else:
        merchant = OTHER_MERCHANT
    async with unchanged(db):
        with pytest.raises(NotFound if merchant == OTHER_MERCHANT else InvalidTransition) as err:
            await outcomes.cancel(db, job_id, reason="x", actor="user", merchant_id=merchant)
    if merchant != OTHER_MERCHANT:
        assert str(err.value) == str(InvalidTransition(ended, "cancelled"))


# -- failed -> scheduled: the manual retry -----------------------------------------------


async def _failed_job(db: Database) -> str:
    job_id = await running_job(db, max_attempts=1)
    assert await outcomes.fail(db, outcomes.Attempt(job_id, 1, "w1"), outcomes.Failure("boom"))
    return job_id


async def test_retry_failed(db: Database) -> None:
    """One more attempt at ``run_at``: ``scheduled``, ``max_attempts`` one past the
    attempt, no worker, no ``finished_at``; the last error is kept; the next claim is
    attempt 2."""
    job_id = await _failed_job(db)
    since = await log_mark(db)
    job = await outcomes.retry_failed(
        db, job_id, actor="user", run_at=NOW, merchant_id=ALL_MERCHANTS
    )
    assert job == await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.run_at, job.attempt, job.max_attempts) == (
        JobStatus.SCHEDULED,
        NOW,
        1,
        2,
    )
    assert (job.worker_id, job.finished_at, job.last_error) == (None, None, "boom")
    logged = Logged(EventType.JOB_RETRIED, "user", JobStatus.SCHEDULED, RETRIED, JobStatus.FAILED)
    await assert_logged(db, since, {job_id: [logged]})
    await claims.enqueue_due(db, now=NOW, limit=10, actor="populator")
    [again] = await claims.claim(db, claim_params())
    assert (again.id, again.attempt) == (job_id, 2)


@pytest.mark.parametrize("status", ["scheduled", "succeeded", "other_merchant"])
async def test_retry_refused_changes_nothing(db: Database, status: str) -> None:
    job_id = await _failed_job(db)
    merchant: MerchantScope = OTHER_MERCHANT if status == "other_merchant" else ALL_MERCHANTS
    if status == "scheduled":
        await outcomes.retry_failed(db, job_id, actor="user", run_at=NOW, merchant_id=ALL_MERCHANTS)
    elif status == "succeeded":
        job_id = await running_job(db)
        assert await outcomes.succeed(db, outcomes.Attempt(job_id, 1, "w1"), None)
    async with unchanged(db):
        with pytest.raises(NotFound if merchant == OTHER_MERCHANT else InvalidTransition) as err:
            await outcomes.retry_failed(db, job_id, actor="u", run_at=NOW, merchant_id=merchant)
    if merchant != OTHER_MERCHANT:
        assert str(err.value) == str(InvalidTransition(status, "scheduled"))


# -- failure propagation -----------------------------------------------------------------


def _user_cancelled(came_from: JobStatus) -> Logged:
    return Logged(
        EventType.JOB_CANCELLED, "user", JobStatus.CANCELLED, CANCELLED, came_from, {"reason": "x"}
    )


# name: (the upstream's status before, how it ends, its end status, its own event)
UPSTREAM_ENDINGS: dict[
    str, tuple[JobStatus, Callable[[Database, str], Awaitable[object]], JobStatus, Logged]
] = {
    "cancel_scheduled": (
        JobStatus.SCHEDULED,
        lambda db, j: outcomes.cancel(db, j, reason="x", actor="user", merchant_id=ALL_MERCHANTS),
        JobStatus.CANCELLED,
        _user_cancelled(JobStatus.SCHEDULED),
    ),
    "cancel_running": (
        JobStatus.RUNNING,
        lambda db, j: outcomes.cancel(db, j, reason="x", actor="user", merchant_id=ALL_MERCHANTS),
        JobStatus.CANCELLED,
        _user_cancelled(JobStatus.RUNNING),
    ),
    "fail": (
        JobStatus.RUNNING,
        lambda db, j: outcomes.fail(db, outcomes.Attempt(j, 1, "w1"), outcomes.Failure("boom")),
        JobStatus.FAILED,
        failed_logged("worker:w1", FAILED, "failed"),
    ),
    "fail_in": (
        JobStatus.RUNNING,
        lambda db, j: db.write(
            lambda conn: outcomes.fail_in(
                conn, db.dialect, outcomes.Attempt(j, 1, "w1"), outcomes.Failure("boom")
            )
        ),
        JobStatus.FAILED,
        failed_logged("worker:w1", FAILED, "failed"),
    ),
    "expire_leases": (
        JobStatus.RUNNING,
        functools.partial(expire, dead_worker=False),
        JobStatus.FAILED,
        failed_logged("watcher", FAILED_LOST, claims.WORKER_LOST),
    ),
}


@pytest.mark.parametrize("writer", UPSTREAM_ENDINGS)
async def test_failure_propagates_to_waiting_dependents(db: Database, writer: str) -> None:
    """Whichever writer ends an upstream job ``failed`` or ``cancelled``, its waiting
    dependents with policy ``cancel`` are cancelled in the same write, and theirs in
    turn, each with its own ``job.cancelled`` naming the dependency and the root; a
    dependent with policy ``run`` stays ``scheduled``."""
    before, end, ended, upstream_logged = UPSTREAM_ENDINGS[writer]
    upstream = await _job_in(db, before)

    async def dependent(on: str, policy: DependencyFailurePolicy) -> str:
        new = NewJob("t", NOW + timedelta(hours=1), depends_on=[on], on_dependency_failure=policy)
        return (await create_job(db, new, actor="a", now=NOW)).job.id

    child = await dependent(upstream, DependencyFailurePolicy.CANCEL)
    runs_anyway = await dependent(upstream, DependencyFailurePolicy.RUN)
    grandchild = await dependent(child, DependencyFailurePolicy.CANCEL)
    since = await log_mark(db)
    await end(db, upstream)
    assert (await get_job(db, runs_anyway, ALL_MERCHANTS)).status is JobStatus.SCHEDULED
    cascade = {
        child: cascade_reason(upstream, upstream, ended),
        grandchild: cascade_reason(child, upstream, ended),
    }
    expected = {upstream: [upstream_logged]}
    for job_id, (reason, dependency) in zip(
        cascade, ((cascade[child], upstream), (cascade[grandchild], child)), strict=True
    ):
        row, job = await job_row(db, job_id), await get_job(db, job_id, ALL_MERCHANTS)
        assert (job.status, job.cancel_reason, job.worker_id) == (JobStatus.CANCELLED, reason, None)
        assert_at(db, row["updated_at"], job.finished_at)
        extra = {"reason": reason, "dependency_id": dependency, "root_job_id": upstream}
        expected[job_id] = [
            Logged(
                EventType.JOB_CANCELLED,
                CASCADE_ACTOR,
                JobStatus.CANCELLED,
                CASCADE_CANCELLED,
                JobStatus.SCHEDULED,
                extra,
            )
        ]
    await assert_logged(db, since, expected)
