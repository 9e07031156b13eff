"""The history checker (tests/history.py) itself: silent on good histories, and failing,
naming the job, on hand-built bad ones (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, update

from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job
from taskmill.store.schema import jobs
from tests.history import (
    check_history,
    create_effects_table,
    effects,
    execution_violations,
    history_violations,
    stuck_violations,
)

PAST = datetime(2026, 1, 1, tzinfo=UTC)  # due long ago by the database clock
GRACE = 60.0  # s, for I1


def _soon() -> datetime:
    """A populator clock a little ahead: rescued jobs are due at the database's now."""
    return datetime.now(UTC) + timedelta(minutes=1)


def _claim(worker: str, lease: float = 30.0) -> claims.ClaimParams:
    return claims.ClaimParams(
        worker_id=worker, limit=10, lease_seconds=lease, queues=["default"], task_types=["t"]
    )


async def _new(db: Database, max_attempts: int = 3) -> str:
    new = NewJob("t", PAST, max_attempts=max_attempts)
    return (await create_job(db, new, actor="t", now=PAST)).job.id


async def _run(db: Database, worker: str = "w1", lease: float = 30.0) -> int:
    await claims.enqueue_due(db, now=_soon(), limit=10, actor="t")
    [job] = await claims.claim(db, _claim(worker, lease))
    return job.attempt


async def _succeed(db: Database, job_id: str, attempt: int, worker: str = "w1") -> None:
    assert await outcomes.succeed(db, outcomes.Attempt(job_id, attempt, worker), "ok")


async def _forge(db: Database, job_id: str, *steps: tuple[EventType, str, str]) -> None:
    """Append hand-made events ``(type, from, to)`` for ``job_id``: a forged history."""
    async with db.transaction() as conn:
        await event_log.append(
            conn,
            [
                event_log.NewEvent(
                    type=kind,
                    merchant_id=DEFAULT_MERCHANT_ID,
                    actor="forger",
                    occurred_at=PAST,
                    job_id=job_id,
                    data={"from": old, "to": new, "changes": {"attempt": 1}},
                )
                for kind, old, new in steps
            ],
        )


async def _lines(db: Database) -> list[str]:
    return await history_violations(db, queued_grace_s=GRACE, running_grace_s=GRACE)


async def _good_history(db: Database) -> dict[str, str]:
    """A success, a rescued-then-succeeded job, a cancel, a failed job retried by hand."""
    ok = await _new(db)
    await _succeed(db, ok, await _run(db))

    rescued = await _new(db)
    await _run(db, "w1", lease=-1)  # its lease is already over: the worker "died"
    await claims.expire_leases(db, limit=10, actor="watcher")
    await _succeed(db, rescued, await _run(db, "w2"), "w2")

    cancelled = await _new(db)
    await outcomes.cancel(db, cancelled, reason="no", actor="user", merchant_id=ALL_MERCHANTS)

    reopened = await _new(db, max_attempts=1)
    attempt = await _run(db)
    failure = outcomes.Failure("boom")
    assert await outcomes.fail(db, outcomes.Attempt(reopened, attempt, "w1"), failure)
    await outcomes.retry_failed(db, reopened, actor="user", run_at=PAST, merchant_id=ALL_MERCHANTS)
    await _succeed(db, reopened, await _run(db))
    return {"ok": ok, "rescued": rescued, "cancelled": cancelled, "reopened": reopened}


async def test_history_checker_passes_a_good_history(db: Database) -> None:
    ids = await _good_history(db)
    await create_effects_table(db)
    async with db.transaction() as conn:
        await conn.execute(
            insert(effects),
            [
                {"job_id": ids["ok"], "attempt": 1, "worker_pid": 1},
                {"job_id": ids["rescued"], "attempt": 1, "worker_pid": 1},
                {"job_id": ids["rescued"], "attempt": 2, "worker_pid": 2},
                {"job_id": ids["reopened"], "attempt": 1, "worker_pid": 1},
                {"job_id": ids["reopened"], "attempt": 2, "worker_pid": 1},
            ],
        )
    # Two terminal events for the re-opened job, in two cycles: fine. The rescued job ran
    # twice, once because of the fault that hit it.
    await check_history(
        db, faults_per_job={ids["rescued"]: 1}, queued_grace_s=GRACE, running_grace_s=GRACE
    )


async def test_history_checker_flags_a_double_terminal_event(db: Database) -> None:
    ids = await _good_history(db)
    await _forge(db, ids["ok"], (EventType.JOB_FAILED, "succeeded", "failed"))
    lines = await _lines(db)
    assert any(line.startswith(f"I2 {ids['ok']}: terminal events") for line in lines), lines
    assert not any(line.startswith(f"I2 {ids['reopened']}") for line in lines)
    with pytest.raises(AssertionError, match=ids["ok"]):
        await check_history(db, queued_grace_s=GRACE, running_grace_s=GRACE)


async def test_history_checker_flags_an_impossible_event_path(db: Database) -> None:
    job_id = await _new(db)  # scheduled -> running, skipping queued
    await _forge(db, job_id, (EventType.JOB_STARTED, "scheduled", "running"))
    lines = await _lines(db)
    assert any(
        line.startswith(f"I3 {job_id}:") and "scheduled -> running is not a transition" in line
        for line in lines
    ), lines


async def test_history_checker_flags_an_attempt_claimed_twice(db: Database) -> None:
    job_id = await _new(db)
    await _succeed(db, job_id, await _run(db))
    await _forge(  # a second claim of attempt 1
        db,
        job_id,
        (EventType.JOB_RETRIED, "succeeded", "scheduled"),
        (EventType.JOB_QUEUED, "scheduled", "queued"),
        (EventType.JOB_STARTED, "queued", "running"),
    )
    lines = await _lines(db)
    assert any(line.startswith(f"I3 {job_id}:") for line in lines), lines


async def test_history_checker_flags_a_projection_diff(db: Database) -> None:
    ids = await _good_history(db)
    async with db.transaction() as conn:
        await conn.execute(
            update(jobs).where(jobs.c.id == ids["cancelled"]).values(status=JobStatus.SUCCEEDED)
        )
    lines = await _lines(db)
    assert f"I4 {ids['cancelled']}.status: events='cancelled' table='succeeded'" in lines


async def test_history_checker_flags_stuck_jobs(db: Database) -> None:
    running = await _new(db)
    await _run(db, "w1", lease=-30)  # claimed, lease over 30 s ago, nobody rescued it
    queued = await _new(db)
    await claims.enqueue_due(db, now=_soon(), limit=10, actor="t")
    overdue = await _new(db)  # due since PAST, never queued
    await asyncio.sleep(0.05)
    lines = await stuck_violations(db, queued_grace_s=0.01, running_grace_s=10)
    assert f"I1 {queued}: stuck queued" in lines
    assert f"I1 {running}: stuck running past its lease" in lines
    assert f"I1 {overdue}: stuck scheduled, due and not queued" in lines
    # Within the grace periods nothing is stuck; waiting for a future run_at never is.
    assert await stuck_violations(db, queued_grace_s=3600 * 24 * 3650, running_grace_s=60) == []
    later = await create_job(
        db, NewJob("t", datetime.now(UTC) + timedelta(hours=1)), actor="t", now=PAST
    )
    lines = await stuck_violations(db, queued_grace_s=0.01, running_grace_s=10)
    assert not any(later.job.id in line for line in lines)


async def test_history_checker_flags_too_many_executions(db: Database) -> None:
    ids = await _good_history(db)
    await create_effects_table(db)
    rows = [
        {"job_id": ids["ok"], "attempt": 1, "worker_pid": 1},
        {"job_id": ids["ok"], "attempt": 1, "worker_pid": 2},  # one attempt run twice
        {"job_id": ids["rescued"], "attempt": 1, "worker_pid": 1},
        {"job_id": ids["rescued"], "attempt": 2, "worker_pid": 2},
    ]
    async with db.transaction() as conn:
        await conn.execute(insert(effects), rows)
    lines = await execution_violations(db)
    assert f"I5 {ids['ok']}: attempt 1 executed 2 times" in lines
    assert f"I5 {ids['ok']}: executed 2 times, allowed 1 (1 + 0 faults + 0 planned re-runs)" in (
        lines
    )
    # The rescued job's second run is fine only if the test says a fault hit it.
    assert any(line.startswith(f"I5 {ids['rescued']}: executed 2 times") for line in lines)
    assert not any(
        ids["rescued"] in line for line in await execution_violations(db, {ids["rescued"]: 1})
    )
    with pytest.raises(AssertionError, match=rf"I5: 3\n.*{ids['ok']}"):
        await check_history(db, queued_grace_s=GRACE, running_grace_s=GRACE)


async def test_history_checker_needs_the_effects_table_for_faults(db: Database) -> None:
    job_id = await _new(db)
    lines = await history_violations(
        db, faults_per_job={job_id: 1}, queued_grace_s=GRACE, running_grace_s=GRACE
    )
    assert "I5: faults_per_job given but there is no effects table to count in" in lines
