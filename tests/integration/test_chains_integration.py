"""Chains and groups through the real services on both databases: scheduled in one
transaction, each step reading what the steps before it returned, the dependency
policy on a failure, and every refusal leaving nothing stored."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskmill import Chain, Fail, Group, Signature, TaskContext, Taskmill, ValidationError
from taskmill.config import load_settings
from taskmill.core.canvas import MAX_CANVAS_JOBS
from taskmill.core.jobs import JobStatus
from taskmill.store.database import Database
from taskmill.store.replay import projection_diff
from taskmill.testing import run_until_idle
from tests import backends
from tests.conftest import wait_for
from tests.jobs import job_of

FAST = {"retry": {"base_seconds": 0.0, "jitter": 0.0}}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    application = Taskmill(
        settings=load_settings("test", None, database={"url": database_url}, **FAST)
    )

    @application.task("number")
    async def number(ctx: TaskContext, payload: int) -> int:
        return payload

    @application.task("add_one")
    async def add_one(ctx: TaskContext, payload: Any) -> int:
        [previous] = (await ctx.upstream_results()).results
        return int(previous) + 1

    @application.task("collect")
    async def collect(ctx: TaskContext, payload: Any) -> dict[str, Any]:
        upstream = await ctx.upstream_results()
        return {
            "results": upstream.results,
            "ids": list(upstream),
            "statuses": [j.status.value for j in upstream.jobs],
        }

    @application.task("collect_sync")
    def collect_sync(ctx: TaskContext, payload: Any) -> list[Any]:
        return ctx.upstream_results_sync().results

    @application.task("boom", max_retries=0)
    async def boom(ctx: TaskContext, payload: Any) -> None:
        raise Fail("no")

    yield application
    await application.stop()
    db = Database.from_url(database_url)
    try:
        assert await projection_diff(db) == []
    finally:
        await db.close()


async def test_chain_passes_each_result_to_the_next_step(app: Taskmill) -> None:
    jobs = await app.chain(
        Signature("number", 1), Signature("add_one"), Signature("add_one", priority=5)
    )
    assert [j.task_type for j in jobs] == ["number", "add_one", "add_one"]
    deps = await app.dependencies(jobs[1].id)
    assert [u.id for u in deps.upstream] == [jobs[0].id]
    assert [d.id for d in deps.downstream] == [jobs[2].id]
    await run_until_idle(app)
    done = [await job_of(app, j.id) for j in jobs]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 3
    assert [j.result for j in done] == [1, 2, 3]


async def test_group_then_a_step_reads_every_member_in_order(app: Taskmill) -> None:
    members = [Signature("number", n) for n in (30, 10, 20)]
    jobs = await app.chain(Signature("number", 0), Group(*members), Signature("collect"))
    await run_until_idle(app)
    final = await job_of(app, jobs[-1].id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.result == {
        "results": [30, 10, 20],
        "ids": [j.id for j in jobs[1:4]],
        "statuses": ["succeeded"] * 3,
    }


async def test_group_alone_runs_its_members(app: Taskmill) -> None:
    jobs = await app.group(Signature("number", 1), Signature("number", 2))
    await run_until_idle(app)
    assert [(await job_of(app, j.id)).result for j in jobs] == [1, 2]
    assert (await app.dependencies(jobs[1].id)).upstream == []


async def test_group_of_chains_then_a_step(app: Taskmill) -> None:
    jobs = await app.chain(
        Group(Chain(Signature("number", 1), Signature("add_one")), Signature("number", 10)),
        Signature("collect"),
    )
    await run_until_idle(app)
    assert (await job_of(app, jobs[-1].id)).result["results"] == [2, 10]


async def test_sync_handler_reads_upstream_results(app: Taskmill) -> None:
    jobs = await app.chain(
        Group(Signature("number", 4), Signature("number", 5)), Signature("collect_sync")
    )
    await run_until_idle(app)
    assert (await job_of(app, jobs[-1].id)).result == [4, 5]


async def test_job_without_dependencies_reads_no_upstream_results(app: Taskmill) -> None:
    job = await app.schedule("collect", None)
    await run_until_idle(app)
    assert (await job_of(app, job.id)).result == {"results": [], "ids": [], "statuses": []}


async def test_chain_stops_at_a_failure_by_default(app: Taskmill) -> None:
    jobs = await app.chain(
        Signature("number", 1), Signature("boom"), Signature("add_one"), Signature("add_one")
    )
    await run_until_idle(app)
    done = [await job_of(app, j.id) for j in jobs]
    assert [j.status for j in done] == [
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]
    assert done[2].cancel_reason == f"dependency {jobs[1].id} failed"
    assert done[3].cancel_reason == (
        f"dependency {jobs[2].id} cancelled: upstream {jobs[1].id} failed"
    )


async def test_step_with_policy_run_runs_after_a_failed_member(app: Taskmill) -> None:
    jobs = await app.chain(
        Group(Signature("number", 7), Signature("boom")),
        Signature("collect", on_dependency_failure="run"),
    )
    await run_until_idle(app)
    final = await job_of(app, jobs[-1].id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.result["results"] == [7, None]
    assert final.result["statuses"] == ["succeeded", "failed"]


async def test_chain_step_may_also_wait_on_an_existing_job(app: Taskmill) -> None:
    earlier = await app.schedule("number", 100)
    jobs = await app.chain(Signature("number", 1), Signature("collect", depends_on=[earlier.id]))
    await run_until_idle(app)
    final = await job_of(app, jobs[-1].id)
    assert sorted(final.result["results"]) == [1, 100]


async def _stored(app: Taskmill) -> int:
    return len(await app.list())


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ((Signature("number", 1), Signature("nope")), "jobs[1].task_type"),
        ((Signature("number", 1), Signature("number", timeout=-1)), "jobs[1].timeout"),
        ((Signature("number", 1), Signature("number", max_retries=-1)), "jobs[1].max_retries"),
        (
            (Signature("number", 1), Signature("add_one", depends_on=["missing"])),
            "jobs[1].depends_on",
        ),
        ((Signature("number", 1), Signature("number", "\x00")), "jobs[1].payload"),
        ((Signature("number", 1), Group()), "jobs[1]"),
        ((), "jobs"),
    ],
)
async def test_chain_refused_stores_nothing(
    app: Taskmill, steps: tuple[Signature | Group, ...], field: str
) -> None:
    await app.open()
    with pytest.raises(ValidationError) as caught:
        await app.chain(*steps)
    assert caught.value.field == field
    assert await _stored(app) == 0


async def test_empty_group_is_refused(app: Taskmill) -> None:
    with pytest.raises(ValidationError) as caught:
        await app.group()
    assert caught.value.field == "jobs" and "empty group" in caught.value.reason
    assert await _stored(app) == 0


async def test_chain_over_the_batch_limit_is_refused_whole(app: Taskmill) -> None:
    members = [Signature("number", i) for i in range(MAX_CANVAS_JOBS)]
    with pytest.raises(ValidationError) as caught:
        await app.chain(Group(*members), Signature("collect"))
    assert caught.value.field == "jobs"
    assert f"at most {MAX_CANVAS_JOBS} jobs" in caught.value.reason
    assert await _stored(app) == 0


async def test_canvas_failing_in_the_transaction_rolls_back_whole(app: Taskmill) -> None:
    """The last signature's upstream is failed: the store refuses it after inserting
    nothing of the others (one transaction)."""
    failed = await app.schedule("boom", None)
    await run_until_idle(app)
    with pytest.raises(ValidationError) as caught:
        await app.chain(
            Signature("number", 1),
            Signature("number", 2),
            Signature("collect", depends_on=[failed.id]),
        )
    assert caught.value.field == "jobs[2].depends_on" and "failed" in caught.value.reason
    assert await _stored(app) == 1  # the failed job only


async def test_chain_through_redis_starts_its_head_queued(postgres_url: str) -> None:
    """With Redis, a chain's first step waits for nothing: it is created ``queued`` and
    announced by the producer; the next step is created ``scheduled`` (it waits)."""
    reason = await backends.redis_reachable()
    if reason is not None:
        backends.unavailable(reason)
    prefix = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        "test",
        None,
        database={"url": postgres_url},
        broker={"url": backends.REDIS_URL, "prefix": prefix},
        scheduler={"poll_interval_seconds": 0.1},
    )
    app = Taskmill(settings=settings)

    @app.task("number")
    async def number(ctx: TaskContext, payload: int) -> int:
        return payload

    @app.task("add_one")
    async def add_one(ctx: TaskContext, payload: Any) -> int:
        return int((await ctx.upstream_results()).results[0]) + 1

    try:
        head, tail = await app.chain(Signature("number", 41), Signature("add_one"))
        assert (head.status, tail.status) == (JobStatus.QUEUED, JobStatus.SCHEDULED)
        await app.start()

        async def finished() -> bool:
            return (await job_of(app, tail.id)).status is JobStatus.SUCCEEDED

        await wait_for(finished, timeout=20)
        assert (await job_of(app, tail.id)).result == 42
    finally:
        await app.stop()
        await backends.delete_prefix(prefix)
