"""Conformance, how a running job ends: succeeded (single and batched), back to
``scheduled`` (retry, release, lease expiry), failed (the worker's or the watcher's), and
the fence against stale writers. Every writer, on SQLite and PostgreSQL (``support.py``)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from taskmill.core.events import EventType
from taskmill.core.jobs import JobStatus, RunOutcome
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes, runs, workers
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_job, get_job
from tests.conformance.support import (
    FAILED,
    FAILED_LOST,
    LEASE_EXPIRED,
    RELEASED,
    RETRY_SCHEDULED,
    STALE,
    SUCCEEDED,
    Logged,
    assert_at,
    assert_logged,
    expire,
    failed_logged,
    job_row,
    log_mark,
    stale_attempt,
    unchanged,
)
from tests.store import NOW, claim_params, running_job

RETRY_AT = NOW + timedelta(seconds=60)

# -- running -> succeeded ----------------------------------------------------------------

Succeeder = Callable[[Database, Sequence[outcomes.Success]], Awaitable[list[bool]]]


async def _one_by_one(db: Database, batch: Sequence[outcomes.Success]) -> list[bool]:
    return [await outcomes.succeed(db, s.attempt, s.result, s.duration_seconds) for s in batch]


async def _in_shared_transaction(db: Database, batch: Sequence[outcomes.Success]) -> list[bool]:
    async with db.transaction() as conn:
        return await outcomes.succeed_many(conn, db.dialect, batch)


async def _driver_outcomes(db: Database, batch: Sequence[outcomes.Success]) -> list[bool]:
    done, _ = await store_for(db).record_outcomes(batch, [])
    return done


async def _driver_outcomes_beside_a_failure(
    db: Database, batch: Sequence[outcomes.Success]
) -> list[bool]:
    """The batch in one transaction with a failure (of no job: refused, writes nothing)."""
    stray = (outcomes.Attempt("no-such-job", 1, "w1"), outcomes.Failure("x"))
    done, [failed] = await store_for(db).record_outcomes(batch, [stray])
    assert failed is False
    return done


SUCCEEDERS: dict[str, Succeeder] = {
    # The shared forms: one by one, and a batch in a transaction of its own.
    "succeed": _one_by_one,
    "record_successes": outcomes.record_successes,
    # A batch in the caller's transaction: transition_claimed() on both.
    "succeed_many": _in_shared_transaction,
    # The group committer's batch through the driver: PostgreSQL one statement.
    "driver_record_outcomes": _driver_outcomes,
    # ... beside failures: the same statement in a transaction (PostgreSQL).
    "driver_record_outcomes_beside_a_failure": _driver_outcomes_beside_a_failure,
}


async def _running(db: Database, count: int, *, max_attempts: int = 3) -> list[str]:
    """``count`` jobs claimed by ``w1`` (attempt 1), oldest first."""
    for i in range(count):
        new = NewJob("t", NOW - timedelta(seconds=count - i), max_attempts=max_attempts)
        await create_job(db, new, actor="a", now=NOW, queue_if_due=True)
    return [j.id for j in await claims.claim(db, claim_params())]


@pytest.mark.parametrize("writer", SUCCEEDERS)
async def test_succeed(db: Database, writer: str) -> None:
    """``succeeded`` with the result, ``finished_at`` the instant of the event, no lease,
    the worker and attempt kept, the run closed; a stale entry in the same batch is
    refused alone and leaves its job as it was."""
    done, stale, other = await _running(db, 3)
    stale_before, since = await job_row(db, stale), await log_mark(db)
    batch = [
        outcomes.Success(outcomes.Attempt(done, 1, "w1"), {"n": 1}, 0.5),
        outcomes.Success(outcomes.Attempt(stale, 1, "w2"), "late", 0.1),
        outcomes.Success(outcomes.Attempt(other, 1, "w1"), [1, 2], None),
    ]
    assert await SUCCEEDERS[writer](db, batch) == [True, False, True]
    for job_id, result, duration in ((done, {"n": 1}, 0.5), (other, [1, 2], None)):
        row, job = await job_row(db, job_id), await get_job(db, job_id, ALL_MERCHANTS)
        assert (job.status, job.result, job.attempt, job.worker_id, job.lease_expires_at) == (
            JobStatus.SUCCEEDED,
            result,
            1,
            "w1",
            None,
        )
        assert_at(db, row["updated_at"], job.finished_at)
        [run] = await runs.list_runs(db, job_id, ALL_MERCHANTS)
        assert (run.outcome, run.finished_at, run.duration_seconds) == (
            RunOutcome.SUCCEEDED,
            job.finished_at,
            duration,
        )
    assert await job_row(db, stale) == stale_before
    logged = Logged(
        EventType.JOB_SUCCEEDED, "worker:w1", JobStatus.SUCCEEDED, SUCCEEDED, JobStatus.RUNNING
    )
    await assert_logged(db, since, {done: [logged], other: [logged]})


@pytest.mark.parametrize("writer", SUCCEEDERS)
async def test_succeed_clears_an_earlier_attempts_error(db: Database, writer: str) -> None:
    """A job that failed once and then succeeded has no ``last_error``; its first run
    keeps the error."""
    [job_id] = await _running(db, 1)
    retry = outcomes.Failure("boom", retry_at=NOW)
    assert await outcomes.fail(db, outcomes.Attempt(job_id, 1, "w1"), retry)
    await claims.enqueue_due(db, now=NOW, limit=10, actor="populator")
    [again] = await claims.claim(db, claim_params())
    assert (again.id, again.attempt, again.last_error) == (job_id, 2, "boom")
    success = outcomes.Success(outcomes.Attempt(job_id, 2, "w1"), "ok")
    assert await SUCCEEDERS[writer](db, [success]) == [True]
    job = await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.last_error) == (JobStatus.SUCCEEDED, None)
    first, second = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert (first.error, second.error) == ("boom", None)


@pytest.mark.parametrize("stale", STALE)
@pytest.mark.parametrize("writer", SUCCEEDERS)
async def test_succeed_by_a_stale_claim_changes_nothing(
    db: Database, writer: str, stale: str
) -> None:
    [job_id] = await _running(db, 1)
    attempt = await stale_attempt(db, stale, job_id)
    async with unchanged(db):
        assert await SUCCEEDERS[writer](db, [outcomes.Success(attempt, "late")]) == [False]


# -- the worker's failure: fail (own transaction) or fail_in (the group committer's) ----

Failer = Callable[[Database, outcomes.Attempt, outcomes.Failure], Awaitable[bool]]


async def _fail_in_shared_transaction(
    db: Database, attempt: outcomes.Attempt, failure: outcomes.Failure
) -> bool:
    return await db.write(lambda conn: outcomes.fail_in(conn, db.dialect, attempt, failure))


async def _driver_fail(db: Database, attempt: outcomes.Attempt, failure: outcomes.Failure) -> bool:
    done, [failed] = await store_for(db).record_outcomes([], [(attempt, failure)])
    assert done == []
    return failed


FAILERS: dict[str, Failer] = {
    "fail": outcomes.fail,
    "fail_in": _fail_in_shared_transaction,
    # The group committer's, through the driver.
    "driver_record_outcomes": _driver_fail,
}


@pytest.mark.parametrize("stale", STALE)
@pytest.mark.parametrize("retry", [False, True], ids=["final", "retry"])
@pytest.mark.parametrize("writer", FAILERS)
async def test_fail_by_a_stale_claim_changes_nothing(
    db: Database, writer: str, retry: bool, stale: str
) -> None:
    [job_id] = await _running(db, 1)
    attempt = await stale_attempt(db, stale, job_id)
    failure = outcomes.Failure("late", retry_at=RETRY_AT if retry else None)
    async with unchanged(db):
        assert await FAILERS[writer](db, attempt, failure) is False


@pytest.mark.parametrize("stale", STALE)
async def test_release_by_a_stale_claim_changes_nothing(db: Database, stale: str) -> None:
    [job_id] = await _running(db, 1)
    attempt = await stale_attempt(db, stale, job_id)
    async with unchanged(db):
        assert await outcomes.release(db, attempt) is False


# -- running -> scheduled: retry, release, lease expiry ----------------------------------


@dataclass(frozen=True, slots=True)
class Ending:
    """One writer of a transition out of ``running`` and what it must leave."""

    write: Callable[[Database, str], Awaitable[Any]]
    logged: Logged
    run: tuple[RunOutcome, str]  # the run's outcome and error
    last_error: str | None
    extra_attempts: int = 0  # release: the interrupted attempt does not count


async def _retry(db: Database, job_id: str, writer: str) -> bool:
    failure = outcomes.Failure("boom", RunOutcome.TIMED_OUT, RETRY_AT, 0.25)
    return await FAILERS[writer](db, outcomes.Attempt(job_id, 1, "w1"), failure)


def _back(event: EventType, actor: str, changes: frozenset[str], **extra: str) -> Logged:
    return Logged(event, actor, JobStatus.SCHEDULED, changes, JobStatus.RUNNING, extra)


LOST = (RunOutcome.LOST, claims.WORKER_LOST)
TO_SCHEDULED: dict[str, Ending] = {
    **{
        f"{writer}_retry": Ending(
            functools.partial(_retry, writer=writer),
            _back(EventType.JOB_RETRY_SCHEDULED, "worker:w1", RETRY_SCHEDULED, reason="timed_out"),
            (RunOutcome.TIMED_OUT, "boom"),
            "boom",
        )
        for writer in FAILERS
    },
    "release": Ending(
        lambda db, job_id: outcomes.release(db, outcomes.Attempt(job_id, 1, "w1")),
        _back(EventType.JOB_RELEASED, "worker:w1", RELEASED),
        (RunOutcome.RELEASED, "released at shutdown"),
        None,  # a release is no error: last_error stays as it was
        extra_attempts=1,
    ),
    "expire_lapsed_lease": Ending(
        lambda db, job_id: expire(db, job_id, dead_worker=False),
        _back(EventType.JOB_LEASE_EXPIRED, "watcher", LEASE_EXPIRED, reason=claims.WORKER_LOST),
        LOST,
        claims.WORKER_LOST,
    ),
    "expire_dead_worker": Ending(
        lambda db, job_id: expire(db, job_id, dead_worker=True),
        _back(EventType.JOB_LEASE_EXPIRED, "watcher", LEASE_EXPIRED, reason=claims.WORKER_LOST),
        LOST,
        claims.WORKER_LOST,
    ),
}


@pytest.mark.parametrize("writer", TO_SCHEDULED)
async def test_back_to_scheduled(db: Database, writer: str) -> None:
    """Another attempt later: ``scheduled`` without a worker or lease, the attempt kept
    (the fence), ``run_at`` the backoff's (retry) or the event's instant (release,
    rescue), the run closed with why."""
    ending = TO_SCHEDULED[writer]
    [job_id] = await _running(db, 1)
    since = await log_mark(db)
    await ending.write(db, job_id)
    row, job = await job_row(db, job_id), await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.attempt, job.worker_id, job.lease_expires_at, job.finished_at) == (
        JobStatus.SCHEDULED,
        1,
        None,
        None,
        None,
    )
    assert (job.last_error, job.max_attempts) == (ending.last_error, 3 + ending.extra_attempts)
    if ending.logged.type is EventType.JOB_RETRY_SCHEDULED:
        assert job.run_at == RETRY_AT
    else:
        assert_at(db, row["updated_at"], job.run_at)
    [run] = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert (run.outcome, run.error) == ending.run and run.finished_at is not None
    await assert_logged(db, since, {job_id: [ending.logged]})


# -- running -> failed -------------------------------------------------------------------


async def _fail_final(db: Database, job_id: str, writer: str) -> bool:
    failure = outcomes.Failure("boom", duration_seconds=0.25)
    return await FAILERS[writer](db, outcomes.Attempt(job_id, 1, "w1"), failure)


TO_FAILED: dict[str, Ending] = {
    **{
        writer: Ending(
            functools.partial(_fail_final, writer=writer),
            failed_logged("worker:w1", FAILED, "failed"),
            (RunOutcome.FAILED, "boom"),
            "boom",
        )
        for writer in FAILERS
    },
    "expire_lapsed_lease": Ending(
        lambda db, job_id: expire(db, job_id, dead_worker=False),
        failed_logged("watcher", FAILED_LOST, claims.WORKER_LOST),
        LOST,
        claims.WORKER_LOST,
    ),
    "expire_dead_worker": Ending(
        lambda db, job_id: expire(db, job_id, dead_worker=True),
        failed_logged("watcher", FAILED_LOST, claims.WORKER_LOST),
        LOST,
        claims.WORKER_LOST,
    ),
}


@pytest.mark.parametrize("writer", TO_FAILED)
async def test_failed(db: Database, writer: str) -> None:
    """No attempts left: ``failed``, ``finished_at`` the event's instant, no lease, the
    attempt kept, the error, the run closed with why."""
    ending = TO_FAILED[writer]
    [job_id] = await _running(db, 1, max_attempts=1)
    since = await log_mark(db)
    await ending.write(db, job_id)
    row, job = await job_row(db, job_id), await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.attempt, job.lease_expires_at, job.last_error) == (
        JobStatus.FAILED,
        1,
        None,
        ending.last_error,
    )
    assert_at(db, row["updated_at"], job.finished_at)
    # A final status keeps the worker that ran (or lost) the job, whoever wrote it.
    assert job.worker_id == "w1"
    [run] = await runs.list_runs(db, job_id, ALL_MERCHANTS)
    assert (run.outcome, run.error) == ending.run and run.finished_at is not None
    await assert_logged(db, since, {job_id: [ending.logged]})


async def test_expiry_leaves_a_live_lease_alone(db: Database) -> None:
    """The watcher's fence: a lease renewed in time (or a worker alive) is not expired."""
    job_id = await running_job(db, lease=-1)
    assert await claims.renew_leases(db, "w1", [(job_id, 1)], 30) == {job_id}
    await workers.register(db, "w1", "host", 1, ["default"], 1)
    async with unchanged(db):
        assert await claims.expire_leases(db, limit=10, actor="watcher") == claims.ExpiredLeases(
            [], []
        )
        assert await workers.mark_dead(db, silent_for_seconds=60) == []
