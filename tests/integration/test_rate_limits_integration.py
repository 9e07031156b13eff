"""Rate limits (ADR 0014): the token bucket a claim takes from, through each database's
driver (PostgreSQL starts the picked jobs with its one claim statement), and
two executors sharing one limit on PostgreSQL (with the database broker and Redis)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import JobFilter, JobStatus
from taskmill.core.rate_limits import parse_rate_limit
from taskmill.store import claims
from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.jobs import NewJob, create_jobs
from taskmill.store.replay import projection_diff
from taskmill.store.schema import job_runs, jobs
from taskmill.store.schema import rate_limits as buckets
from tests import backends
from tests.conftest import wait_for

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # the jobs' times; buckets run on the real clock


def _params(limit: int, task_types: list[str]) -> claims.ClaimParams:
    return claims.ClaimParams(
        worker_id="w1", limit=limit, lease_seconds=30, queues=["default"], task_types=task_types
    )


async def _queue(db: Database, task_type: str, count: int) -> None:
    news = [NewJob(task_type, NOW + timedelta(milliseconds=i)) for i in range(count)]
    await create_jobs(db, news, actor="test", now=NOW)
    await claims.enqueue_due(db, now=NOW + timedelta(hours=1), limit=10_000, actor="test")


async def _age_bucket(db: Database, task_type: str, seconds: float) -> None:
    """Move the bucket's last refill back: as if ``seconds`` had passed (no sleeping)."""
    async with db.transaction() as conn:
        row = (await conn.execute(select(buckets).where(buckets.c.task_type == task_type))).one()
        then = row.refilled_at - timedelta(seconds=seconds)
        await conn.execute(
            update(buckets).where(buckets.c.task_type == task_type).values(refilled_at=then)
        )


async def test_rate_limit_claim_takes_the_burst_then_what_refills(
    db: Database, store: SqlStore
) -> None:
    limit = parse_rate_limit("1/h", burst=3)
    await store.declare_rate_limits({"t": limit, "u": None}, worker_id="w1", now=datetime.now(UTC))
    await _queue(db, "t", 10)
    await _queue(db, "u", 2)

    first = await store.claim_rate_limited(_params(10, ["t", "u"]))
    assert sorted(j.task_type for j in first.jobs) == ["t", "t", "t", "u", "u"]
    # The limit held jobs back: the worker is told when the next token comes (an hour).
    assert first.retry_after is not None and 3000 < first.retry_after <= 3600
    empty = await store.claim_rate_limited(_params(10, ["t", "u"]))
    assert empty.jobs == [] and empty.retry_after is not None

    await _age_bucket(db, "t", 2 * 3600 + 1)  # two tokens flowed in
    second = await store.claim_rate_limited(_params(10, ["t", "u"]))
    assert [j.task_type for j in second.jobs] == ["t", "t"]
    await _age_bucket(db, "t", 100 * 3600)  # a long idle spell fills the bucket to its burst
    third = await store.claim_rate_limited(_params(10, ["t", "u"]))
    assert len(third.jobs) == 3
    async with db.read() as conn:
        queued = (
            await conn.execute(select(jobs.c.id).where(jobs.c.status == JobStatus.QUEUED))
        ).all()
    assert len(queued) == 2
    assert await projection_diff(db) == []


async def test_rate_limit_claim_within_free_slots_says_no_wait(
    db: Database, store: SqlStore
) -> None:
    """A claim stopped by the worker's free slots, not by the limit: no early wake-up."""
    await store.declare_rate_limits(
        {"t": parse_rate_limit("1/h", burst=5)}, worker_id="w1", now=NOW
    )
    await _queue(db, "t", 10)
    claimed = await store.claim_rate_limited(_params(2, ["t"]))
    assert len(claimed.jobs) == 2 and claimed.retry_after is None


async def test_rate_limit_declarations_last_start_wins_and_none_removes(
    db: Database, store: SqlStore
) -> None:
    ten = parse_rate_limit("10/s")
    [new] = await store.declare_rate_limits({"t": ten}, worker_id="a", now=NOW)
    assert (new.text, new.replaced) == ("t: limit 10/s burst 1 (new)", False)
    assert await store.declare_rate_limits({"t": ten}, worker_id="b", now=NOW) == []
    five = parse_rate_limit("5/s", burst=2)
    [changed] = await store.declare_rate_limits({"t": five}, worker_id="b", now=NOW)
    assert "replacing 10/s burst 1 declared by a" in changed.text and changed.replaced
    stored = await store.rate_limits(["t", "u"])
    assert list(stored) == ["t"] and stored["t"].declared_by == "b"
    assert (stored["t"].limit.per_second, stored["t"].limit.burst) == (5.0, 2)
    [removed] = await store.declare_rate_limits({"t": None}, worker_id="c", now=NOW)
    assert "removed" in removed.text and removed.replaced
    assert await store.rate_limits(["t"]) == {}


async def test_rate_limit_and_merchant_cap_both_hold(db: Database, store: SqlStore) -> None:
    await store.declare_rate_limits(
        {"t": parse_rate_limit("1/h", burst=4)}, worker_id="w", now=datetime.now(UTC)
    )
    await _queue(db, "t", 6)
    params = claims.ClaimParams(
        worker_id="w1",
        limit=10,
        lease_seconds=30,
        queues=["default"],
        task_types=["t"],
        max_running_per_merchant=2,
    )
    claimed = await store.claim_rate_limited(params)
    assert len(claimed.jobs) == 2  # the cap, below the bucket's 4
    async with db.read() as conn:
        tokens = (await conn.execute(select(buckets.c.tokens))).scalar_one()
    assert tokens == pytest.approx(2.0, abs=0.01)  # only what was started was taken


async def test_rate_limited_jobs_are_not_announced_again_as_stuck(
    db: Database, store: SqlStore
) -> None:
    """The failure watcher re-announces jobs queued too long (a lost hint), but not those
    a limit holds back on purpose: each round would publish them again."""
    await _queue(db, "t", 2)
    await _queue(db, "u", 1)
    await store.declare_rate_limits(
        {"t": parse_rate_limit("1/h")}, worker_id="w", now=datetime.now(UTC)
    )
    stuck = await claims.stuck_in_queue(db, older_than_seconds=0, limit=10)
    assert [j.task_type for j in stuck] == ["u"]


# -- two executors on PostgreSQL ----------------------------------------------------------

RATE, BURST, JOBS = 5.0, 2, 20
# A claim reads the bucket's clock in its first statement and writes started_at in a
# later one: starts are checked against the limit with this much clock slack (the length
# of a claim transaction on a loaded machine, well above its few milliseconds).
CLAIM_SLACK_SECONDS = 0.25


def _executor(url: str, broker: dict[str, Any] | None, concurrency: int) -> Taskmill:
    settings = load_settings(
        "test",
        None,
        database={"url": url},
        broker=broker or {},
        worker={"lease_seconds": 5.0, "heartbeat_seconds": 0.5, "concurrency": concurrency},
        scheduler={"poll_interval_seconds": 0.05, "watcher_interval_seconds": 0.2},
    )
    app = Taskmill(settings=settings)

    @app.task("charge", rate_limit=f"{RATE:g}/s", rate_burst=BURST)
    async def charge(ctx: TaskContext, payload: Any) -> None:
        return None

    @app.task("other")
    async def other(ctx: TaskContext, payload: Any) -> None:
        return None

    return app


@contextlib.asynccontextmanager
async def _two_executors(broker_kind: str, url: str) -> AsyncIterator[tuple[Taskmill, Taskmill]]:
    """Two executors (each the whole app) on one PostgreSQL database and broker."""
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    broker: dict[str, Any] | None = None
    if broker_kind == "redis":
        reason = await backends.redis_reachable()
        broker = {"url": backends.REDIS_URL, "prefix": prefix, "reclaim_idle_seconds": 1.0}
    elif broker_kind == "rabbitmq":
        reason = await backends.rabbitmq_reachable()
        broker = {"url": backends.AMQP_URL, "prefix": prefix}
    else:
        reason = None
    if reason is not None:
        backends.unavailable(reason)
    apps = (_executor(url, broker, 4), _executor(url, broker, 4))
    try:
        for app in apps:
            await app.start()
        yield apps
    finally:
        for app in apps:
            await app.stop()
        if broker_kind == "redis":
            await backends.delete_prefix(prefix)
        elif broker_kind == "rabbitmq":
            await backends.delete_queues(prefix)


@pytest.fixture(params=["database", "redis", "rabbitmq"])
async def two_executors(
    request: pytest.FixtureRequest, postgres_url: str
) -> AsyncIterator[tuple[Taskmill, Taskmill]]:
    async with _two_executors(request.param, postgres_url) as apps:
        yield apps


@pytest.fixture(params=["redis", "rabbitmq"])
async def two_hinted_executors(
    request: pytest.FixtureRequest, postgres_url: str
) -> AsyncIterator[tuple[Taskmill, Taskmill]]:
    """Brokers whose hints name jobs: under a limit they only wake the worker."""
    async with _two_executors(request.param, postgres_url) as apps:
        yield apps


async def _succeeded(app: Taskmill, task_type: str) -> int:
    done = await app.list(JobFilter(statuses=[JobStatus.SUCCEEDED], limit=10_000))
    return sum(j.task_type == task_type for j in done)


async def test_rate_limit_two_executors_share_one_limit(
    two_executors: tuple[Taskmill, Taskmill], postgres_url: str
) -> None:
    """20 jobs at 5/s with a burst of 2 through two executors: counted from job_runs
    (the database clock), no span between two starts holds more starts than the limit
    allows, and both executors took part."""
    a, _ = two_executors
    await a.schedule_many("charge", [None] * JOBS)
    await wait_for(lambda: _count_is(a, "charge", JOBS), timeout=30)

    db = Database.from_url(postgres_url)
    try:
        async with db.read() as conn:
            query = select(job_runs.c.started_at, job_runs.c.worker_id)
            rows = (await conn.execute(query.order_by(job_runs.c.started_at))).all()
    finally:
        await db.close()
    starts = [r.started_at for r in rows]
    assert len(starts) == JOBS
    assert len({r.worker_id for r in rows}) == 2
    for i, first in enumerate(starts):
        for j in range(i + 1, len(starts)):
            span = (starts[j] - first).total_seconds()
            assert j - i + 1 <= RATE * (span + CLAIM_SLACK_SECONDS) + BURST, (i, j, span)


async def _count_is(app: Taskmill, task_type: str, n: int) -> bool:
    return await _succeeded(app, task_type) == n


async def test_rate_limit_held_jobs_leave_slots_to_other_task_types(
    two_hinted_executors: tuple[Taskmill, Taskmill],
) -> None:
    """A limit that lets one job an hour: the rest stay queued, and 20 jobs of another
    type run on the same executors (4 slots each) meanwhile."""
    a, b = two_hinted_executors
    workers = [(await app.open()).worker for app in (a, b)]

    async def both_read_the_limit() -> bool:
        return all("charge" in w._limited for w in workers)

    await wait_for(both_read_the_limit)  # both started, so declared 10/s
    # The last declaration wins: an executor starting with a stricter limit replaces
    # 10/s for everyone (its bucket keeps its tokens, within the new burst of 1).
    await workers[0].store.declare_rate_limits(
        {"charge": parse_rate_limit("1/h")}, worker_id="strict", now=datetime.now(UTC)
    )
    await a.schedule_many("charge", [None] * 10)
    await a.schedule_many("other", [None] * 20)
    await wait_for(lambda: _count_is(a, "other", 20), timeout=30)
    charges = await a.list(JobFilter(limit=100))
    started = [j for j in charges if j.task_type == "charge" and j.status is not JobStatus.QUEUED]
    assert len(started) == 1  # the one token of a burst of 1
    queued = [j for j in charges if j.task_type == "charge" and j.status is JobStatus.QUEUED]
    assert len(queued) == 10 - len(started)
    # What GET /jobs/{id} and the UI say of them:
    reason = await (await a.open()).jobs.waiting_reason(queued[0])
    assert reason == (
        "task type 'charge' is rate-limited to 0.000277778 a second (burst 1): its queued "
        "jobs start as the limit allows"
    )
