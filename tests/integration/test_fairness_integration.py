"""Scheduling strategies: priority, FIFO within a priority, and the per-merchant cap on
running jobs that keeps one tenant's backlog from starving the others."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import JobStatus
from taskmill.services.scheduling import ScheduleRequest
from taskmill.store import claims, tenants
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job, create_jobs
from taskmill.store.replay import projection_diff
from taskmill.store.schema import job_runs, jobs
from tests import backends
from tests.conftest import wait_for

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _params(limit: int, cap: int | None) -> claims.ClaimParams:
    return claims.ClaimParams(
        worker_id="w1",
        limit=limit,
        lease_seconds=30,
        queues=["default"],
        task_types=["t"],
        max_running_per_merchant=cap,
    )


async def _merchant(db: Database, name: str) -> str:
    return (await tenants.create_merchant(db, name, now=NOW)).id


async def _queue(db: Database, merchant: str, count: int, offset: float = 0.0) -> list[str]:
    news = [
        NewJob("t", NOW + timedelta(seconds=offset + i / 1000), merchant_id=merchant)
        for i in range(count)
    ]
    made = await create_jobs(db, news, actor="test", now=NOW)
    await claims.enqueue_due(db, now=NOW + timedelta(hours=1), limit=10_000, actor="test")
    return [job.id for job in made]


async def test_claims_take_higher_priority_first_then_oldest(db: Database) -> None:
    low = await create_job(db, NewJob("t", NOW, priority=0), actor="t", now=NOW)
    older = await create_job(db, NewJob("t", NOW, priority=5), actor="t", now=NOW)
    newer = await create_job(
        db, NewJob("t", NOW + timedelta(seconds=1), priority=5), actor="t", now=NOW
    )
    await claims.enqueue_due(db, now=NOW + timedelta(hours=1), limit=10, actor="test")
    order = [(await claims.claim(db, _params(1, None)))[0].id for _ in range(3)]
    assert order == [older.job.id, newer.job.id, low.job.id]


async def test_cap_limits_each_merchant_and_fills_the_batch_with_others(db: Database) -> None:
    a, b = await _merchant(db, "A"), await _merchant(db, "B")
    await _queue(db, a, 50)
    b_jobs = await _queue(db, b, 3, offset=60)  # queued after all of A's

    first = await claims.claim(db, _params(10, cap=4))

    per_merchant = Counter(job.merchant_id for job in first)
    assert per_merchant == {a: 4, b: 3}
    assert {job.id for job in first if job.merchant_id == b} == set(b_jobs)
    # Both merchants are now at (or out of) their cap: nothing more until one finishes.
    assert await claims.claim(db, _params(10, cap=4)) == []
    assert await projection_diff(db) == []


async def test_cap_counts_jobs_running_on_other_workers(db: Database) -> None:
    a = await _merchant(db, "A")
    await _queue(db, a, 10)
    await claims.claim(db, _params(3, cap=None))  # another worker, three of A's running
    more = await claims.claim(db, _params(10, cap=5))
    assert len(more) == 2


async def test_without_a_cap_one_merchant_may_take_every_slot(db: Database) -> None:
    a, b = await _merchant(db, "A"), await _merchant(db, "B")
    await _queue(db, a, 50)
    await _queue(db, b, 3, offset=60)
    taken = await claims.claim(db, _params(10, cap=None))
    assert {job.merchant_id for job in taken} == {a}


async def test_populator_lets_merchants_take_turns_when_asked(db: Database) -> None:
    a, b = await _merchant(db, "A"), await _merchant(db, "B")
    news = [NewJob("t", NOW + timedelta(seconds=i), merchant_id=a) for i in range(50)]
    news += [NewJob("t", NOW + timedelta(seconds=60 + i), merchant_id=b) for i in range(3)]
    await create_jobs(db, news, actor="test", now=NOW)
    later = NOW + timedelta(hours=1)

    in_run_at_order, _ = await claims.enqueue_due_and_next(db, now=later, limit=10, actor="p")
    in_turn, _ = await claims.enqueue_due_and_next(
        db, now=later, limit=10, actor="p", merchants_in_turn=True
    )

    assert {job.merchant_id for job in in_run_at_order} == {a}
    assert Counter(job.merchant_id for job in in_turn) == {a: 7, b: 3}
    # Within a merchant, still oldest first: A's next seven after the first ten.
    a_next = sorted(job.run_at for job in in_turn if job.merchant_id == a)
    assert a_next == [NOW + timedelta(seconds=i) for i in range(10, 17)]
    assert await projection_diff(db) == []


async def test_populator_taking_turns_skips_rows_another_holds_and_fills_its_batch(
    postgres_url: str,
) -> None:
    """Two populators at once (S11): rows the first holds are skipped and replaced by the
    next in turn, so the second still queues a full batch, and none twice."""
    db = Database.from_url(postgres_url)
    try:
        a, b = await _merchant(db, "A"), await _merchant(db, "B")
        news = [
            NewJob("t", NOW + timedelta(seconds=i), merchant_id=m)
            for i in range(20)
            for m in (a, b)
        ]
        await create_jobs(db, news, actor="test", now=NOW)
        later = NOW + timedelta(hours=1)
        async with db.transaction() as other:
            held = select(jobs.c.id).order_by(jobs.c.run_at).limit(10).with_for_update()
            held_ids = set((await other.execute(held)).scalars())
            queued, _ = await claims.enqueue_due_and_next(
                db, now=later, limit=10, actor="p", merchants_in_turn=True
            )
        assert len(queued) == 10
        assert held_ids.isdisjoint(job.id for job in queued)
        assert Counter(job.merchant_id for job in queued) == {a: 5, b: 5}
        assert await projection_diff(db) == []
    finally:
        await db.close()


FAIR = {
    "worker": {"concurrency": 10, "lease_seconds": 5.0, "heartbeat_seconds": 0.5},
    "scheduler": {"poll_interval_seconds": 0.2, "max_running_per_merchant": 5},
}


@pytest.fixture(params=["database", "redis"])
async def fair_app(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Taskmill]:
    overrides: dict[str, Any] = {**FAIR, "database": {"url": database_url}}
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        reason = await backends.redis_reachable()
        if reason is not None:
            backends.unavailable(reason)
        overrides["broker"] = {"url": backends.REDIS_URL, "prefix": prefix}
    app = Taskmill(settings=load_settings("test", None, **overrides))
    yield app
    await app.stop()
    if request.param == "redis":
        await backends.delete_prefix(prefix)


async def test_a_tenant_backlog_does_not_starve_another_tenant(fair_app: Taskmill) -> None:
    """Issue 6: merchant A enqueues 10,000 jobs, then merchant B 10; B's all start while
    most of A's backlog still waits (without the cap they would wait for A's whole backlog,
    and without merchants taking turns in the populator, for A's backlog to be queued).
    Measured as jobs, not seconds: a slow machine slows A's jobs as much as B's wait."""

    @fair_app.task("work")
    async def work(ctx: TaskContext, payload: None) -> None:
        await asyncio.sleep(0.02)

    runtime = await fair_app.open()
    db = runtime.db
    a, b = await _merchant(db, "A"), await _merchant(db, "B")
    backlog = [ScheduleRequest("work", merchant_id=a) for _ in range(10_000)]
    await runtime.scheduler.schedule_many(backlog)
    await fair_app.start()

    async def a_under_way() -> bool:
        return await _count(db, jobs.c.merchant_id == a, jobs.c.status == JobStatus.SUCCEEDED) > 20

    await wait_for(a_under_way, timeout=30)
    created = await runtime.scheduler.schedule_many(
        [ScheduleRequest("work", merchant_id=b) for _ in range(10)]
    )
    runtime.wakers.populator.wake()
    b_ids = [job.id for job in created]

    async def b_done() -> bool:
        return await _count(db, jobs.c.id.in_(b_ids), jobs.c.status == JobStatus.SUCCEEDED) == 10

    await wait_for(b_done, timeout=30)
    async with db.read() as conn:
        last_start = (
            await conn.execute(
                select(func.max(job_runs.c.started_at)).where(job_runs.c.job_id.in_(b_ids))
            )
        ).scalar_one()
        a_before_b = (
            await conn.execute(
                select(func.count())
                .select_from(job_runs.join(jobs, jobs.c.id == job_runs.c.job_id))
                .where(jobs.c.merchant_id == a, job_runs.c.started_at <= last_start)
            )
        ).scalar_one()
    wait = (last_start - min(job.created_at for job in created)).total_seconds()
    # Issue 6 asks for 2 s (PostgreSQL: 0.5-0.8 s on a slow 2-core VM; SQLite, one writer
    # busy queueing A's backlog, 1.7-5 s). A runs at most 5 at a time, so B's wait is
    # bounded in A's jobs: starved, B would follow all 10,000 of them.
    print(  # noqa: T201
        f"fairness: B's last job started {wait:.2f} s after B enqueued,"
        f" after {a_before_b} of A's jobs"
    )
    assert a_before_b < 2_500, f"{a_before_b} of A's 10,000 jobs started before B's last one"


async def _count(db: Database, *where: Any) -> int:
    async with db.read() as conn:
        n: int = (
            await conn.execute(select(func.count()).select_from(jobs).where(*where))
        ).scalar_one()
    return n
