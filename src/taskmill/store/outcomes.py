"""How a claimed job ends: success, failure (retry or final), release, cancel, manual retry;
and the user's "run now" for a scheduled job."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.errors import Conflict, InvalidTransition
from taskmill.core.events import EventType
from taskmill.core.jobs import (
    CANCELLABLE_STATUSES,
    Job,
    JobStatus,
    RunOutcome,
)
from taskmill.core.tenants import MerchantScope
from taskmill.store.claims import waiting
from taskmill.store.database import Database
from taskmill.store.dialect import Dialect
from taskmill.store.jobs import get_job
from taskmill.store.notify import CANCELLED, notify
from taskmill.store.records import to_job
from taskmill.store.runs import close_runs, finish_runs
from taskmill.store.schema import jobs
from taskmill.store.transition import (
    Claimed,
    Transition,
    db_clock,
    transition,
    transition_claimed,
)

_RUNNING = frozenset({JobStatus.RUNNING})


@dataclass(frozen=True, slots=True)
class Attempt:
    """The claim a worker holds: only this worker, on this attempt, may record the outcome."""

    job_id: str
    attempt: int
    worker_id: str

    def guards(self) -> list[Any]:
        return [jobs.c.worker_id == self.worker_id, jobs.c.attempt == self.attempt]


async def succeed(
    db: Database, attempt: Attempt, result: Any, duration_seconds: float | None = None
) -> bool:
    """Record one success; ``False`` (0 rows) if the claim was lost (rescued or cancelled).

    Workers batch theirs through :func:`succeed_many`; this is the single-job form.
    """
    [done] = await record_successes(db, [Success(attempt, result, duration_seconds)])
    return done


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: ``retry_at`` set means another attempt, ``None`` means final."""

    error: str
    outcome: RunOutcome = RunOutcome.FAILED
    retry_at: datetime | None = None
    duration_seconds: float | None = None


async def fail(db: Database, attempt: Attempt, failure: Failure) -> bool:
    """Record a failed attempt; ``False`` (0 rows) if the claim was lost."""
    async with db.transaction() as conn:
        return await fail_in(conn, db.dialect, attempt, failure)


async def fail_in(
    conn: AsyncConnection, dialect: Dialect, attempt: Attempt, failure: Failure
) -> bool:
    """:func:`fail` in the caller's transaction."""
    if failure.retry_at is not None:
        to_status, event = JobStatus.SCHEDULED, EventType.JOB_RETRY_SCHEDULED
        values: dict[str, Any] = {"run_at": failure.retry_at, "worker_id": None}
    else:
        to_status, event = JobStatus.FAILED, EventType.JOB_FAILED
        values = {"finished_at": dialect.db_now()}
    rows = await transition(
        conn,
        dialect,
        Transition(
            job_ids=[attempt.job_id],
            from_statuses=_RUNNING,
            to_status=to_status,
            event_type=event,
            actor=f"worker:{attempt.worker_id}",
            values={**values, "last_error": failure.error, "lease_expires_at": None},
            guards=attempt.guards(),
            data={"reason": failure.outcome.value},
        ),
    )
    await _close_run(
        conn, dialect, attempt, rows, failure.outcome, failure.error, failure.duration_seconds
    )
    return bool(rows)


async def release(db: Database, attempt: Attempt) -> bool:
    """Hand an unfinished job back at shutdown, without using up an attempt.

    As River's snooze does, ``max_attempts`` grows by one so the interrupted attempt
    does not count, while ``attempt`` stays monotonic (it is the fencing token).
    """
    async with db.transaction() as conn:
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=[attempt.job_id],
                from_statuses=_RUNNING,
                to_status=JobStatus.SCHEDULED,
                event_type=EventType.JOB_RELEASED,
                actor=f"worker:{attempt.worker_id}",
                values={
                    "run_at": db.dialect.db_now(),
                    "max_attempts": jobs.c.max_attempts + 1,
                    "worker_id": None,
                    "lease_expires_at": None,
                },
                guards=attempt.guards(),
            ),
        )
        await _close_run(
            conn, db.dialect, attempt, rows, RunOutcome.RELEASED, "released at shutdown"
        )
    return bool(rows)


async def cancel(
    db: Database, job_id: str, *, reason: str, actor: str, merchant_id: MerchantScope
) -> Job:
    """Cancel a scheduled, queued or running job; on PostgreSQL a notification tells the
    worker running it, in any process (the jobs service tells this process's worker).
    Raises ``NotFound`` or ``InvalidTransition`` (already finished)."""
    async with db.transaction() as conn:
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=[job_id],
                from_statuses=CANCELLABLE_STATUSES,
                to_status=JobStatus.CANCELLED,
                event_type=EventType.JOB_CANCELLED,
                actor=actor,
                values={
                    "cancel_reason": reason,
                    "finished_at": db.dialect.db_now(),
                    "lease_expires_at": None,
                },
                merchant_id=merchant_id,
                data={"reason": reason},
            ),
        )
        if rows:
            await finish_runs(
                conn, db.dialect, [(rows[0].id, rows[0].attempt)], RunOutcome.CANCELLED, reason
            )
            # The executor running it, in whichever process, stops its handler now
            # rather than at its next heartbeat.
            await notify(conn, db.dialect, CANCELLED, rows[0].id)
            return to_job(rows[0])
    current = await get_job(db, job_id, merchant_id)
    raise InvalidTransition(current.status.value, JobStatus.CANCELLED.value)


async def retry_failed(
    db: Database, job_id: str, *, actor: str, run_at: datetime, merchant_id: MerchantScope
) -> Job:
    """Give a ``failed`` job one more attempt at ``run_at``."""
    async with db.transaction() as conn:
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=[job_id],
                from_statuses=frozenset({JobStatus.FAILED}),
                to_status=JobStatus.SCHEDULED,
                event_type=EventType.JOB_RETRIED,
                actor=actor,
                values={
                    "run_at": run_at,
                    "max_attempts": jobs.c.attempt + 1,
                    "finished_at": None,
                    "worker_id": None,
                },
                merchant_id=merchant_id,
            ),
        )
        if rows:
            return to_job(rows[0])
    current = await get_job(db, job_id, merchant_id)
    raise InvalidTransition(current.status.value, JobStatus.SCHEDULED.value)


async def run_now(
    db: Database, job_id: str, *, actor: str, run_at: datetime, merchant_id: MerchantScope
) -> Job:
    """``scheduled -> queued`` at once, due at ``run_at`` (now), with its ``job.queued``
    event: what the populator does when the job's time comes, done early by a user.

    A job the populator would hold back (an upstream job not done, or an earlier
    instance of its ``queue``-overlap template unfinished) is refused (``Conflict``):
    running it now would break the rule it was created under. Not idempotent: a second call finds
    the job ``queued`` and raises ``InvalidTransition``."""
    async with db.transaction() as conn:
        rows = await transition(
            conn,
            db.dialect,
            Transition(
                job_ids=[job_id],
                from_statuses=frozenset({JobStatus.SCHEDULED}),
                to_status=JobStatus.QUEUED,
                event_type=EventType.JOB_QUEUED,
                actor=actor,
                values={"run_at": run_at, "queued_at": db.dialect.db_now()},
                guards=list(waiting()),
                merchant_id=merchant_id,
            ),
        )
        if rows:
            return to_job(rows[0])
    current = await get_job(db, job_id, merchant_id)
    if current.status is JobStatus.SCHEDULED:
        raise Conflict(f"job {job_id!r} waits on another job (a dependency, or an earlier run)")
    raise InvalidTransition(current.status.value, JobStatus.QUEUED.value)


async def _close_run(
    conn: AsyncConnection,
    dialect: Dialect,
    attempt: Attempt,
    rows: list[Any],
    outcome: RunOutcome,
    error: str | None,
    duration_seconds: float | None = None,
) -> None:
    # Only the owner closes its run; a fenced-off zombie leaves the rescuer's record alone.
    if rows:
        await finish_runs(
            conn, dialect, [(attempt.job_id, attempt.attempt)], outcome, error, duration_seconds
        )


@dataclass(frozen=True, slots=True)
class Success:
    """One attempt's success, for :func:`succeed_many`."""

    attempt: Attempt
    result: Any
    duration_seconds: float | None = None


async def succeed_many(
    conn: AsyncConnection, dialect: Dialect, successes: Sequence[Success]
) -> list[bool]:
    """Record many successes in the caller's transaction with a handful of statements
    (what :func:`succeed` does one by one); ``False`` where the claim was lost."""
    if not successes:
        return []
    now = await db_clock(conn, dialect)
    owned = await transition_claimed(
        conn,
        dialect,
        [Claimed(s.attempt.job_id, s.attempt.attempt, s.attempt.worker_id) for s in successes],
        # last_error cleared: a job that succeeded has no error (its runs keep each
        # attempt's).
        [
            {"result": s.result, "finished_at": now, "lease_expires_at": None, "last_error": None}
            for s in successes
        ],
        to_status=JobStatus.SUCCEEDED,
        event_type=EventType.JOB_SUCCEEDED,
        now=now,
    )
    await close_runs(
        conn,
        [
            (
                successes[i].attempt.job_id,
                successes[i].attempt.attempt,
                successes[i].duration_seconds,
            )
            for i in owned
        ],
        RunOutcome.SUCCEEDED,
        now,
    )
    done = set(owned)
    return [i in done for i in range(len(successes))]


async def record_successes(db: Database, successes: Sequence[Success]) -> list[bool]:
    """:func:`succeed_many` in a write transaction of its own."""
    if not successes:
        return []
    return await db.write(lambda conn: succeed_many(conn, db.dialect, successes))
