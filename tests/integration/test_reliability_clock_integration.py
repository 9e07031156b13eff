"""S13 and S14: the recurrence manager across downtime and clock jumps, and an executor
whose clock is 30 s off (SQLite and PostgreSQL). The parts already covered elsewhere are
listed in docs/explanation/reliability-coverage.md; these are the missing pass criteria.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.core.templates import MisfirePolicy, Template
from taskmill.store.database import Database
from taskmill.testing import FrozenClock, run_until_idle
from tests.conftest import wait_for
from tests.history import check_history, check_invariants

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _app(database_url: str, clock: FrozenClock, **scheduler: object) -> Taskmill:
    app = Taskmill(database_url, clock=clock)
    app.settings = app.settings.model_copy(
        update={"scheduler": app.settings.scheduler.model_copy(update=scheduler)}
    )

    @app.task("tick", max_retries=0)
    async def tick(ctx: TaskContext, payload: object) -> None:
        return None

    return app


async def _instances(app: Taskmill, template: Template) -> list[Job]:
    return await app.list(JobFilter(template_id=template.id, limit=10_000))


async def _next_run_at(app: Taskmill, template: Template) -> datetime:
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at is not None
    return current.next_run_at


async def test_reliability_s13_run_all_catches_up_every_missed_tick(database_url: str) -> None:
    """S13: ``catch_up`` ('run_all') after 10 minutes down, cap above 10: exactly 10 runs
    (the cap-3 case and skip / run_once are in test_recurrence_integration.py)."""
    clock = FrozenClock(START)
    app = _app(database_url, clock, max_catchup=20, misfire_grace_seconds=1.0)
    try:
        template = await app.schedule(
            "tick", cron="*/1 * * * *", misfire_policy=MisfirePolicy.CATCH_UP
        )
        assert isinstance(template, Template)
        clock.set(START + timedelta(minutes=10, seconds=30))  # down for 10 minutes
        await run_until_idle(app)
        fired = sorted(j.scheduled_for or START for j in await _instances(app, template))
        assert fired == [START + timedelta(minutes=m) for m in range(1, 11)]
        assert await _next_run_at(app, template) > clock.now()
        await check_invariants((await app.open()).db)
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("policy", "expected"), [(MisfirePolicy.SKIP, 0), (MisfirePolicy.RUN_ONCE, 1)]
)
async def test_reliability_s14_clock_back_then_forward_one_hour(
    database_url: str, policy: MisfirePolicy, expected: int
) -> None:
    """S14: the manager's clock jumps -1 h (0 extra instances, ``next_run_at`` never moves
    back), then +1 h past where it was (the missed ticks follow the misfire policy)."""
    clock = FrozenClock(START)
    app = _app(database_url, clock, misfire_grace_seconds=1.0)
    try:
        template = await app.schedule("tick", interval=60, misfire_policy=policy)
        assert isinstance(template, Template)
        for _ in range(5):
            clock.advance(60)
            await run_until_idle(app)
        before = len(await _instances(app, template))
        next_before = await _next_run_at(app, template)
        clock.advance(-3600)
        for _ in range(5):
            clock.advance(60)
            await run_until_idle(app)
        assert len(await _instances(app, template)) == before
        assert await _next_run_at(app, template) == next_before
        clock.set(START + timedelta(minutes=5, hours=1, seconds=30))  # +1 h past the last tick
        await run_until_idle(app)
        assert len(await _instances(app, template)) == before + expected
        assert await _next_run_at(app, template) > clock.now()
        await check_invariants((await app.open()).db)
    finally:
        await app.stop()


class SkewedClock:
    """The wall clock, ``offset`` seconds off (a machine with a wrong clock)."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(params=[30.0, -30.0], ids=["ahead", "behind"])
async def skewed(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Taskmill]:
    settings = load_settings(
        "test",
        None,
        database={"url": database_url},
        worker={"lease_seconds": 1.0, "heartbeat_seconds": 0.2},
        scheduler={"poll_interval_seconds": 0.05, "watcher_interval_seconds": 0.1},
        retry={"base_seconds": 0.0, "jitter": 0.0},
    )
    app = Taskmill(settings=settings, clock=SkewedClock(request.param))

    @app.task("slow", max_retries=2)
    async def slow(ctx: TaskContext, payload: object) -> str:
        await asyncio.sleep(3)  # three leases long: only heartbeats keep it
        return "done"

    yield app
    await app.stop()


async def test_reliability_s14_skewed_executor_keeps_its_leases(skewed: Taskmill) -> None:
    """S14: an executor (and every service) 30 s ahead of / behind the database: leases
    are judged on the database clock, so 0 false lease expiries, heartbeats keep working."""
    await skewed.start()
    jobs = [await skewed.schedule("slow") for _ in range(5)]

    async def all_done() -> bool:
        got = await skewed.list(JobFilter(statuses=[JobStatus.SUCCEEDED], limit=100))
        return len(got) == len(jobs)

    await wait_for(all_done, timeout=30)
    for job in jobs:
        done = await skewed.get(job.id)
        assert isinstance(done, Job) and done.attempt == 1
        kinds = [e.type.value for e in await skewed.events(job.id)]
        assert "job.lease_expired" not in kinds
    db: Database = (await skewed.open()).db
    await check_history(db, queued_grace_s=5.0, running_grace_s=1.0)
