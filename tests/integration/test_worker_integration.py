"""Jobs through the real services on a temporary SQLite file."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from taskmill import Fail, Retry, TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import Job, JobFilter, JobStatus, RunOutcome
from taskmill.core.retry import BackoffPolicy
from taskmill.core.templates import Template
from taskmill.store.database import Database
from taskmill.store.replay import projection_diff
from taskmill.testing import FrozenClock, run_until_idle
from tests.conftest import wait_for
from tests.history import check_history
from tests.jobs import job_of

FAST = {
    "worker": {"lease_seconds": 2.0, "heartbeat_seconds": 0.2, "shutdown_grace_seconds": 2.0},
    "scheduler": {
        "poll_interval_seconds": 0.05,
        "watcher_interval_seconds": 0.1,
        "min_interval_seconds": 0.1,  # a sub-second template below
    },
    "retry": {"base_seconds": 0.0, "jitter": 0.0},
}
# I1 grace: nothing here is meant to wait in queued, or past a lease, for this long.
QUEUED_GRACE, RUNNING_GRACE = 5.0, 1.0


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    application = Taskmill(settings=load_settings("test", None, **FAST), clock=None)
    application.settings = application.settings.model_copy(
        update={"database": application.settings.database.model_copy(update={"url": database_url})}
    )
    yield application
    await application.stop()
    db = Database.from_url(database_url)
    try:  # whatever the test did, the history it left must hold I1-I4
        await check_history(db, queued_grace_s=QUEUED_GRACE, running_grace_s=RUNNING_GRACE)
    finally:
        await db.close()


async def _status(app: Taskmill, job: Job | Template) -> JobStatus:
    got = await app.get(job.id)
    assert isinstance(got, Job)
    return got.status


async def test_worker_integration_success_stores_result(app: Taskmill) -> None:
    @app.task("add")
    async def add(ctx: TaskContext, payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    job = await app.schedule("add", {"a": 2, "b": 3})
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.result == 5
    [run] = await app.runs(job.id)
    assert run.outcome is RunOutcome.SUCCEEDED and run.duration_seconds is not None


async def test_worker_integration_results_of_every_json_shape_are_stored(app: Taskmill) -> None:
    """Results go to the database as JSON (on PostgreSQL through a batched statement):
    each shape comes back as returned, and the event log replays to the table."""
    shapes: list[Any] = [None, 0, 1.5, "text", [1, "two", None], {"nested": {"a": [True]}}]

    @app.task("shape")
    async def shape(ctx: TaskContext, payload: int) -> Any:
        return shapes[payload]

    jobs = [await app.schedule("shape", i) for i in range(len(shapes))]
    await run_until_idle(app)
    for job, expected in zip(jobs, shapes, strict=True):
        done = await job_of(app, job.id)
        assert done.status is JobStatus.SUCCEEDED and done.result == expected
        assert (await app.events(job.id))[-1].data["changes"]["result"] == expected
    assert await projection_diff(app.runtime.db) == []


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ({1, 2}, "Object of type set is not JSON serializable"),
        (float("nan"), "Out of range float values are not JSON compliant"),
    ],
)
async def test_worker_integration_a_result_that_is_not_json_fails_the_attempt(
    app: Taskmill, result: Any, reason: str
) -> None:
    """A handler returning what JSON cannot hold (a set, NaN) fails its attempt with that
    reason, instead of leaving the job running until its lease expires."""

    @app.task("unstorable", max_retries=0)
    async def unstorable(ctx: TaskContext, payload: None) -> Any:
        return result

    job = await app.schedule("unstorable")
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.FAILED
    assert done.last_error == f"result is not JSON: {reason}"


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        ("x" * 1100, "result is 1,102 bytes of JSON, more than worker.max_result_bytes (1,024)"),
        ({"rows": ["ok", "a\x00b"]}, "result.rows[1]: contains a NUL character"),
        ({"text": "\ud800"}, "result.text: contains a lone surrogate (\\ud800)"),
    ],
)
async def test_worker_integration_a_result_too_large_or_unstorable_fails_alone(
    app: Taskmill, result: Any, reason: str
) -> None:
    """A result over ``worker.max_result_bytes``, or holding text no database can store,
    fails its attempt with a reason naming the limit or the path; the jobs finishing
    beside it in the same grouped commit are stored as usual."""
    worker = app.settings.worker.model_copy(update={"max_result_bytes": 1024})  # its minimum
    app.settings = app.settings.model_copy(update={"worker": worker})

    @app.task("returns", max_retries=0)
    async def returns(ctx: TaskContext, payload: int) -> Any:
        return result if payload == 0 else payload

    jobs = [await app.schedule("returns", i) for i in range(5)]
    await run_until_idle(app)
    bad, *good = [await job_of(app, job.id) for job in jobs]
    assert bad.status is JobStatus.FAILED and bad.result is None
    assert bad.last_error is not None and reason in bad.last_error
    assert [(j.status, j.result) for j in good] == [(JobStatus.SUCCEEDED, i) for i in (1, 2, 3, 4)]


async def test_worker_integration_an_error_message_is_stored_escaped_and_clipped(
    app: Taskmill,
) -> None:
    """An exception's text may hold anything the handler read: NUL and a lone surrogate
    are escaped and 20,000 characters are clipped to their start and end, so recording
    the failure never fails (PostgreSQL refuses NUL in text)."""

    @app.task("noisy", max_retries=0)
    async def noisy(ctx: TaskContext, payload: None) -> None:
        raise ValueError("start\x00\udc80" + "y" * 20_000 + "end")

    job = await app.schedule("noisy")
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.FAILED and done.last_error is not None
    assert done.last_error.startswith("ValueError: start\\x00\\udc80yyy")
    assert done.last_error.endswith("yyyend") and len(done.last_error) < 8100
    assert "characters cut" in done.last_error
    [run] = await app.runs(job.id)
    assert run.error == done.last_error


async def test_worker_integration_fail_retry_success(app: Taskmill) -> None:
    @app.task("flaky", max_retries=3)
    async def flaky(ctx: TaskContext, payload: None) -> str:
        if ctx.attempt < 3:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "third time lucky"

    job = await app.schedule("flaky")
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempt == 3
    outcomes = [r.outcome for r in await app.runs(job.id)]
    assert outcomes == [RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.SUCCEEDED]
    types = [e.type.value for e in await app.events(job.id)]
    assert types.count("job.retry_scheduled") == 2 and types[-1] == "job.succeeded"


async def test_worker_integration_retries_exhausted_fail(app: Taskmill) -> None:
    @app.task("broken", max_retries=1)
    def broken(ctx: TaskContext, payload: None) -> None:
        raise ValueError("always")

    job = await app.schedule("broken")
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.FAILED and done.attempt == 2
    assert done.last_error == "ValueError: always"


async def test_worker_integration_backoff_waits_on_clock(database_url: str) -> None:
    clock = FrozenClock()
    app = Taskmill(database_url, clock=clock)

    @app.task("later", max_retries=2, backoff=BackoffPolicy(60, 2, 600, 0))
    async def later(ctx: TaskContext, payload: None) -> None:
        if ctx.attempt == 1:
            raise RuntimeError("first")

    try:
        job = await app.schedule("later")
        await run_until_idle(app)
        waiting = await job_of(app, job.id)
        assert waiting.status is JobStatus.SCHEDULED
        assert waiting.run_at == clock.now() + timedelta(seconds=60)
        clock.advance(59)
        await run_until_idle(app)
        assert await _status(app, job) is JobStatus.SCHEDULED
        clock.advance(1)
        await run_until_idle(app)
        assert await _status(app, job) is JobStatus.SUCCEEDED
    finally:
        await app.stop()


async def test_worker_integration_retry_exception_sets_delay(database_url: str) -> None:
    clock = FrozenClock()
    app = Taskmill(database_url, clock=clock)

    @app.task("polite", max_retries=1)
    async def polite(ctx: TaskContext, payload: None) -> None:
        raise Retry(delay=5, reason="rate limited")

    try:
        job = await app.schedule("polite")
        await run_until_idle(app)
        waiting = await job_of(app, job.id)
        assert waiting.run_at == clock.now() + timedelta(seconds=5)
        assert waiting.last_error == "rate limited"
    finally:
        await app.stop()


def _counted(metric: str, task_type: str) -> float:
    """``metric``'s total over every merchant label, for one task type."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == metric and sample.labels.get("task_type") == task_type
    )


async def test_worker_integration_fail_exception_ends_job_at_once(
    app: Taskmill, caplog: pytest.LogCaptureFixture
) -> None:
    """``Fail`` on attempt 1 of 3, from an async and from a sync handler: the job ends
    failed with the reason as its error, after one run and no retry."""

    @app.task("doomed", max_retries=2)
    async def doomed(ctx: TaskContext, payload: None) -> None:
        raise Fail("card declined")

    @app.task("doomed_sync", max_retries=2)
    def doomed_sync(ctx: TaskContext, payload: None) -> None:
        raise Fail("no such account")

    caplog.set_level(logging.INFO, logger="taskmill.services.worker")
    reasons = {"doomed": "card declined", "doomed_sync": "no such account"}
    counted = {t: _counted("taskmill_jobs_failed_total", t) for t in reasons}
    jobs = {await app.schedule(task): task for task in counted}
    await run_until_idle(app)
    for scheduled, task in jobs.items():
        done = await job_of(app, scheduled.id)
        assert done.status is JobStatus.FAILED, done.last_error
        assert (done.attempt, done.max_attempts) == (1, 3)
        assert done.last_error == reasons[task]
        assert [r.outcome for r in await app.runs(done.id)] == [RunOutcome.FAILED]
        types = [e.type.value for e in await app.events(done.id)]
        assert "job.retry_scheduled" not in types and types[-1] == "job.failed"
        assert _counted("taskmill_jobs_failed_total", task) == counted[task] + 1
        assert _counted("taskmill_jobs_retried_total", task) == 0
    assert caplog.text.count("attempt 1/3 failed, not retried (the handler raised Fail)") == 2


async def test_worker_integration_fail_on_last_attempt_says_no_retries_left(
    app: Taskmill, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task("doomed_late", max_retries=1)
    async def doomed_late(ctx: TaskContext, payload: None) -> None:
        raise (Retry(reason="not yet") if ctx.attempt == 1 else Fail("gave up"))

    caplog.set_level(logging.INFO, logger="taskmill.services.worker")
    job = await app.schedule("doomed_late")
    await run_until_idle(app)
    done = await job_of(app, job.id)
    assert done.status is JobStatus.FAILED and done.attempt == 2
    assert done.last_error == "gave up"
    assert "attempt 2/2 failed, no retries left: gave up" in caplog.text


async def test_worker_integration_timeout_fails_attempt(app: Taskmill) -> None:
    @app.task("slow", max_retries=0, timeout=0.2)
    async def slow(ctx: TaskContext, payload: None) -> None:
        await asyncio.sleep(30)

    job = await app.schedule("slow")
    started = time.monotonic()
    await run_until_idle(app)
    assert time.monotonic() - started < 10
    done = await job_of(app, job.id)
    assert done.status is JobStatus.FAILED and "timed out" in (done.last_error or "")
    [run] = await app.runs(job.id)
    assert run.outcome is RunOutcome.TIMED_OUT


async def test_worker_integration_validate_rejects_bad_payload(app: Taskmill) -> None:
    def needs_to(payload: Any) -> None:
        if not isinstance(payload, dict) or "to" not in payload:
            raise ValueError("payload needs 'to'")

    @app.task("email", validate=needs_to)
    async def email(ctx: TaskContext, payload: dict[str, str]) -> None:
        return None

    with pytest.raises(ValidationError) as err:
        await app.schedule("email", {"subject": "hi"})
    assert err.value.field == "payload" and "needs 'to'" in err.value.reason
    with pytest.raises(ValidationError) as unknown:
        await app.schedule("no_such_task")
    assert unknown.value.field == "task_type"
    with pytest.raises(ValidationError):
        await app.schedule("email", {"to": "x"}, cron="61 * * * *")
    assert await app.list() == []


async def test_worker_integration_cancel_running_async_job(app: Taskmill) -> None:
    started = asyncio.Event()
    stopped: list[bool] = []

    @app.task("long")
    async def long(ctx: TaskContext, payload: None) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    await app.start()
    job = await app.schedule("long")
    await asyncio.wait_for(started.wait(), 10)
    cancelled = await app.cancel(job.id, "changed my mind")
    assert isinstance(cancelled, Job) and cancelled.status is JobStatus.CANCELLED
    await wait_for(lambda: _true(bool(stopped)))
    assert (await job_of(app, job.id)).cancel_reason == "changed my mind"


async def test_worker_integration_cancel_running_sync_job_sets_flag(app: Taskmill) -> None:
    started = threading.Event()
    saw_cancel: list[bool] = []

    @app.task("sync_long")
    def sync_long(ctx: TaskContext, payload: None) -> None:
        started.set()
        saw_cancel.append(ctx.wait_cancelled(timeout=20))

    await app.start()
    job = await app.schedule("sync_long")
    await asyncio.to_thread(started.wait, 10)
    await app.cancel(job.id, "stop")
    await wait_for(lambda: _true(bool(saw_cancel)))
    assert saw_cancel == [True]
    assert await _status(app, job) is JobStatus.CANCELLED


async def _true(value: bool) -> bool:
    return value


async def test_worker_integration_cancel_scheduled_and_template(app: Taskmill) -> None:
    @app.task("noop")
    async def noop(ctx: TaskContext, payload: None) -> None:
        return None

    job = await app.schedule("noop", delay=3600)
    assert (await app.cancel(job.id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    template = await app.schedule("noop", interval=60)
    off = await app.cancel(template.id)
    assert isinstance(off, Template) and not off.active


async def test_worker_integration_per_task_concurrency_limit(app: Taskmill) -> None:
    running = 0
    peak = 0

    @app.task("limited", concurrency=2)
    async def limited(ctx: TaskContext, payload: None) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    jobs = [await app.schedule("limited") for _ in range(8)]
    await app.start()
    await wait_for(lambda: _all_status(app, jobs, JobStatus.SUCCEEDED))
    assert peak == 2


async def _all_status(app: Taskmill, jobs: list[Job | Template], status: JobStatus) -> bool:
    return all([await _status(app, j) is status for j in jobs])


async def test_worker_integration_graceful_stop_releases_unfinished(app: Taskmill) -> None:
    started = asyncio.Event()

    @app.task("stuck")
    async def stuck(ctx: TaskContext, payload: None) -> None:
        started.set()
        await asyncio.sleep(60)

    @app.task("quick")
    async def quick(ctx: TaskContext, payload: None) -> None:
        await asyncio.sleep(0.3)

    await app.start()
    slow_job = await app.schedule("stuck")
    await asyncio.wait_for(started.wait(), 10)
    fast_job = await app.schedule("quick")
    await wait_for(lambda: _is(app, fast_job, JobStatus.RUNNING))
    await app.stop()
    await app.open()
    assert await _status(app, fast_job) is JobStatus.SUCCEEDED  # finished within the grace
    released = await job_of(app, slow_job.id)
    assert released.status is JobStatus.SCHEDULED  # released, not left running
    # 4 attempts by default; the interrupted one is given back, so 4 remain after it.
    assert released.attempt == 1 and released.max_attempts == 5
    types = [e.type.value for e in await app.events(slow_job.id)]
    assert types[-1] == "job.released"


async def _is(app: Taskmill, job: Job | Template, status: JobStatus) -> bool:
    return await _status(app, job) is status


async def test_worker_integration_interval_template_creates_instances(app: Taskmill) -> None:
    @app.task("tick")
    async def tick(ctx: TaskContext, payload: None) -> None:
        return None

    await app.start()
    template = await app.schedule("tick", interval=0.2, name="ticker")

    async def fired_three() -> bool:
        from taskmill.core.jobs import JobFilter

        done = await app.list(JobFilter(template_id=template.id, statuses=[JobStatus.SUCCEEDED]))
        return len(done) >= 3

    await wait_for(fired_three)
    await app.cancel(template.id)
    from taskmill.core.jobs import JobFilter

    instances = await app.list(JobFilter(template_id=template.id))
    ticks = [j.scheduled_for for j in instances if j.scheduled_for is not None]
    assert len(ticks) == len(set(ticks)) >= 3  # one instance per tick
    # The instances made ahead of their tick (the lookahead) were withdrawn with the
    # template: cancelled, their tick released (ADR 0015).
    withdrawn = [j for j in instances if j.scheduled_for is None]
    assert all(j.status == JobStatus.CANCELLED for j in withdrawn)


async def test_worker_integration_replay_after_real_run(app: Taskmill) -> None:
    @app.task("mixed", max_retries=1)
    async def mixed(ctx: TaskContext, payload: int) -> int:
        if payload % 3 == 0:
            raise RuntimeError("always fails")
        if payload % 3 == 1 and ctx.attempt == 1:
            raise RuntimeError("fails once")
        return payload

    jobs = [await app.schedule("mixed", i) for i in range(30)]
    await app.cancel(jobs[-1].id)
    await run_until_idle(app)
    statuses = {await _status(app, j) for j in jobs}
    assert statuses == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    assert await projection_diff(app.runtime.db) == []


async def test_worker_integration_schedule_many_all_or_nothing(app: Taskmill) -> None:
    def positive(payload: Any) -> None:
        if payload <= 0:
            raise ValueError("must be positive")

    @app.task("square", validate=positive)
    async def square(ctx: TaskContext, payload: int) -> int:
        return payload * payload

    with pytest.raises(ValidationError):
        await app.schedule_many("square", [1, 2, -3])
    assert await app.list() == []  # nothing half-written
    jobs = await app.schedule_many("square", list(range(1, 101)))
    assert len(jobs) == 100
    await run_until_idle(app)
    done = await app.list(JobFilter(statuses=[JobStatus.SUCCEEDED], limit=1000))
    assert sorted(j.result for j in done) == [i * i for i in range(1, 101)]
    assert await projection_diff(app.runtime.db) == []


async def test_worker_integration_schedule_many_wakes_the_populator(database_url: str) -> None:
    """On the database broker immediate jobs are created ``scheduled``: ``schedule_many``
    wakes the running populator, so they start long before its 30 s poll."""
    slow_poll = {**FAST, "scheduler": {**FAST["scheduler"], "poll_interval_seconds": 30.0}}
    app = Taskmill(database_url, settings=load_settings("test", None, **slow_poll))
    app.task("square")(lambda ctx, payload: payload * payload)
    await app.start()
    try:
        await asyncio.sleep(0.5)  # every service is in its 30 s sleep
        jobs = await app.schedule_many("square", [1, 2, 3])
        assert {job.status for job in jobs} == {JobStatus.SCHEDULED}

        async def all_done() -> bool:
            done = await app.list(JobFilter(statuses=[JobStatus.SUCCEEDED]))
            return len(done) == 3

        await wait_for(all_done, timeout=5)
    finally:
        await app.stop()
