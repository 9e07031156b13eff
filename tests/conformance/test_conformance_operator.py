"""Conformance, what an operator does and reads from the monitoring UI: run a scheduled job
now (``scheduled -> queued``), the per-queue numbers and the jobs each worker runs now,
through the ``Store`` of each driver. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from taskmill.core.errors import Conflict, InvalidTransition, NotFound
from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes, queue_overview, tenants, workers
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_job, get_job
from tests.conformance.support import Logged, assert_at, assert_logged, job_row, log_mark, unchanged
from tests.store import NOW, claim_params

OTHER_MERCHANT = "11111111-1111-1111-1111-111111111111"  # unknown: reads as missing
LATER = NOW + timedelta(hours=1)
# run_now writes the time it is given as run_at, beside what the populator writes.
RUN_NOW = frozenset({"status", "queued_at", "run_at"})


async def _scheduled(db: Database, run_at: object = LATER, **kw: object) -> str:
    new = NewJob("t", run_at, **kw)  # type: ignore[arg-type]
    return (await create_job(db, new, actor="a", now=NOW, queue_if_due=False)).job.id


async def test_run_now(db: Database) -> None:
    """``queued`` at once, due at the given now, ``queued_at`` the event's instant; the
    event is ``job.queued`` by the user; the next claim takes it."""
    job_id = await _scheduled(db)
    since = await log_mark(db)
    job = await store_for(db).run_now(ALL_MERCHANTS, job_id, actor="api_key:x", run_at=NOW)
    row = await job_row(db, job_id)
    assert job == await get_job(db, job_id, ALL_MERCHANTS)
    assert (job.status, job.run_at, job.attempt) == (JobStatus.QUEUED, NOW, 0)
    assert_at(db, row["updated_at"], row["queued_at"])
    logged = Logged(
        EventType.JOB_QUEUED, "api_key:x", JobStatus.QUEUED, RUN_NOW, JobStatus.SCHEDULED
    )
    await assert_logged(db, since, {job_id: [logged]})
    [claimed] = await claims.claim(db, claim_params())
    assert claimed.id == job_id


@pytest.mark.parametrize("case", ["queued", "running", "cancelled", "other_merchant"])
async def test_run_now_refused_changes_nothing(db: Database, case: str) -> None:
    """Only a ``scheduled`` job runs now (``InvalidTransition`` naming both statuses);
    another merchant's reads as missing; nothing is written either way."""
    job_id = await _scheduled(db, NOW)
    merchant = OTHER_MERCHANT if case == "other_merchant" else DEFAULT_MERCHANT_ID
    if case in ("queued", "running"):
        await claims.enqueue_due(db, now=NOW, limit=10, actor="populator")
    if case == "running":
        await claims.claim(db, claim_params())
    if case == "cancelled":
        await outcomes.cancel(db, job_id, reason="no", actor="u", merchant_id=ALL_MERCHANTS)
    async with unchanged(db):
        with pytest.raises(NotFound if case == "other_merchant" else InvalidTransition) as err:
            await store_for(db).run_now(merchant, job_id, actor="u", run_at=NOW)
    if case != "other_merchant":
        assert str(err.value) == str(InvalidTransition(case, "queued"))


async def test_run_now_refused_while_a_dependency_holds_it(db: Database) -> None:
    """The populator's own rule: a job waiting on an unfinished upstream job stays."""
    upstream = await _scheduled(db)
    new = NewJob("t", NOW, depends_on=(upstream,))
    downstream = (await create_job(db, new, actor="a", now=NOW, queue_if_due=False)).job.id
    async with unchanged(db):
        with pytest.raises(Conflict, match="waits on another job"):
            await store_for(db).run_now(ALL_MERCHANTS, downstream, actor="u", run_at=NOW)


# -- reads ---------------------------------------------------------------------------------


async def test_queue_stats_counts_one_merchants_queues(db: Database) -> None:
    store = store_for(db)
    other = (await tenants.create_merchant(db, "other", now=NOW)).id
    due = await _scheduled(db, NOW, queue="a")
    await _scheduled(db, LATER, queue="a")
    await _scheduled(db, NOW, queue="b")
    await create_job(db, NewJob("t", NOW, queue="b"), actor="a", now=NOW, queue_if_due=True)
    await _scheduled(db, NOW, queue="b", merchant_id=other)
    await store.run_now(ALL_MERCHANTS, due, actor="u", run_at=NOW)
    [running] = await claims.claim(db, claims.ClaimParams("w1", 1, 60, ["a"], ["t"]))
    assert await outcomes.succeed(db, outcomes.Attempt(running.id, 1, "w1"), None)

    found = await store.queue_stats(DEFAULT_MERCHANT_ID, now=NOW + timedelta(seconds=5))

    assert [
        (q.queue, q.queued, q.scheduled, q.running, q.oldest_due_age_seconds) for q in found.queues
    ] == [("a", 0, 1, 0, None), ("b", 1, 1, 0, 5.0)]
    assert [(q.succeeded_5m, q.succeeded_60m, q.failed_60m) for q in found.queues] == [
        (1, 1, 0),
        (0, 0, 0),
    ]
    assert found.truncated is False
    theirs = await store.queue_stats(other, now=NOW)
    assert [(q.queue, q.scheduled) for q in theirs.queues] == [("b", 1)]


async def test_queue_stats_at_most_max_queues(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue_overview, "MAX_QUEUES", 2)
    for name in ("q3", "q1", "q2"):
        await _scheduled(db, queue=name)
    found = await store_for(db).queue_stats(DEFAULT_MERCHANT_ID, now=NOW)
    assert ([q.queue for q in found.queues], found.truncated) == (["q1", "q2"], True)


async def test_running_by_worker_scoped_and_bounded(db: Database) -> None:
    """Per worker, its running jobs of the merchant (all merchants' for the operator),
    longest-running first, at most ``per_worker``, and the total."""
    other = (await tenants.create_merchant(db, "other", now=NOW)).id
    for merchant in (DEFAULT_MERCHANT_ID, DEFAULT_MERCHANT_ID, DEFAULT_MERCHANT_ID, other):
        await _scheduled(db, NOW, merchant_id=merchant)
    await claims.enqueue_due(db, now=NOW, limit=10, actor="populator")
    first = await claims.claim(db, claims.ClaimParams("w1", 2, 60, ["default"], ["t"]))
    second = await claims.claim(db, claims.ClaimParams("w2", 2, 60, ["default"], ["t"]))
    mine = {j.id for j in first + second if j.merchant_id == DEFAULT_MERCHANT_ID}

    everyone = await store_for(db).running_by_worker(ALL_MERCHANTS)
    assert {w: load.total for w, load in everyone.items()} == {"w1": 2, "w2": 2}
    scoped = await store_for(db).running_by_worker(DEFAULT_MERCHANT_ID)
    assert {j.job_id for load in scoped.values() for j in load.jobs} == mine
    assert sum(load.total for load in scoped.values()) == 3
    one = await workers.running_by_worker(db, ALL_MERCHANTS, per_worker=1)
    assert [(len(load.jobs), load.total) for _, load in sorted(one.items())] == [(1, 2), (1, 2)]
    for load in everyone.values():
        started = [j.started_at for j in load.jobs]
        assert started == sorted(started)
        assert all(j.running_seconds >= 0 and j.task_type == "t" for j in load.jobs)
