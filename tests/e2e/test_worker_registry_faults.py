"""A killed executor's jobs are rescued when the registry marks it dead, not one lease
later (issue 6: the failure watcher rescues a silent worker's jobs at once)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from taskmill.store.database import Database
from taskmill.store.replay import projection_diff
from taskmill.store.schema import events, jobs, workers
from tests import backends
from tests.conftest import wait_for
from tests.e2e.cluster import WATCHER, cluster, effects
from tests.fixtures.apps import build_app

pytestmark = pytest.mark.slow

LONG_LEASE = 120.0  # far longer than the test: only the registry can explain a rescue
DEAD_AFTER = 2.0


@pytest.fixture
async def db(postgres_url: str, redis_available: None) -> AsyncIterator[Database]:
    database = Database.from_url(postgres_url)
    yield database
    await database.close()


async def _count(db: Database, *where: object) -> int:
    async with db.read() as conn:
        stmt = select(func.count()).select_from(jobs).where(*where)  # type: ignore[arg-type]
        n: int = (await conn.execute(stmt)).scalar_one()
    return n


async def test_killed_executor_is_marked_dead_and_its_jobs_rescued_before_the_lease(
    postgres_url: str, db: Database, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    producer = build_app(postgres_url)
    try:
        made = await producer.schedule_many("sleepy", [{"effects": str(log), "seconds": 2}] * 20)
    finally:
        await producer.stop()
    timings = {
        "TASKMILL_WORKER__LEASE_SECONDS": str(LONG_LEASE),
        "TASKMILL_WORKER__HEARTBEAT_SECONDS": "0.5",
        "TASKMILL_SCHEDULER__WORKER_DEAD_AFTER_SECONDS": str(DEAD_AFTER),
    }
    with cluster(postgres_url, backends.REDIS_URL, tmp_path) as c:
        c.start("queue-populator", **timings)
        c.start("failure-watcher", **timings)
        victim = c.start("executor", TASKMILL_WORKER__CONCURRENCY="20", **timings)

        async def all_running() -> bool:
            return len(effects(log)) == 20

        await wait_for(all_running, timeout=60)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        c.start("executor", TASKMILL_WORKER__CONCURRENCY="20", **timings)

        async def all_succeeded() -> bool:
            return await _count(db, jobs.c.status == "succeeded") == 20

        # Liveness deadline: dead-after + watcher + the 2 s jobs + slack, far below the lease.
        await wait_for(all_succeeded, timeout=DEAD_AFTER + WATCHER + 2 + 20)
        recovered_in = time.monotonic() - killed_at

    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == {job.id for job in made} and set(runs.values()) == {2}
    async with db.read() as conn:
        expired = Counter(
            (
                await conn.execute(
                    select(events.c.job_id).where(events.c.type == "job.lease_expired")
                )
            ).scalars()
        )
        statuses = Counter((await conn.execute(select(workers.c.status))).scalars())
    assert set(expired.values()) == {1} and len(expired) == 20
    assert statuses == {"dead": 1, "stopped": 1}
    assert await projection_diff(db) == []
    print(f"rescued 20 jobs of a killed executor in {recovered_in:.1f}s (lease {LONG_LEASE}s)")  # noqa: T201
