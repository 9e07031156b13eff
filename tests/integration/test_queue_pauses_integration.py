"""Paused queues: a paused queue's jobs stay queued on every executor (two of them, on
PostgreSQL with Redis), running ones finish, the pause survives a restart and an event
records who paused and resumed; through the store on both databases, and the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob
from tests import backends
from tests.conftest import wait_for
from tests.integration.api_fixtures import Api, api  # noqa: F401  (fixture)
from tests.store import NOW

# -- the store, both databases ------------------------------------------------------------


async def test_pause_is_idempotent_and_recorded_once(db: Database) -> None:
    store = store_for(db)
    first = await store.pause_queue("reports", merchant_id="m", actor="key:1", now=NOW)
    again = await store.pause_queue("reports", merchant_id="m", actor="key:2", now=NOW)
    assert again == first and first.paused_by == "key:1"
    assert [p.name for p in await store.paused_queues()] == ["reports"]
    assert await store.resume_queue("reports", merchant_id="m", actor="key:3", now=NOW)
    assert not await store.resume_queue("reports", merchant_id="m", actor="key:3", now=NOW)
    assert await store.paused_queues() == []
    logged = await store.list_events(ALL_MERCHANTS, EventFilter())
    queue_events = [(e.type, e.actor, e.data) for e in logged if e.type.startswith("queue.")]
    assert queue_events == [
        (EventType.QUEUE_PAUSED, "key:1", {"queue": "reports"}),
        (EventType.QUEUE_RESUMED, "key:3", {"queue": "reports"}),
    ]


async def test_jobs_of_a_paused_queue_are_not_announced_again(db: Database) -> None:
    """The failure watcher re-announces jobs queued too long (a lost hint), but not those
    of a paused queue: their hints wait in the broker, and copies would pile up."""
    store = store_for(db)
    for queue in ("default", "reports"):
        new = NewJob("t", NOW, queue=queue)
        await store.create_job(new, actor="a", now=NOW, queue_if_due=True)
    await store.pause_queue("reports", merchant_id="m", actor="a", now=NOW)
    stuck = await store.stuck_in_queue(older_than_seconds=-3600, limit=10)
    assert [job.queue for job in stuck] == ["default"]


# -- executors ------------------------------------------------------------------------------


def _app(url: str, prefix: str) -> Taskmill:
    settings = load_settings(
        "test",
        None,
        database={"url": url},
        broker={"url": backends.REDIS_URL, "prefix": prefix},
        worker={"queues": ["default", "reports"], "concurrency": 5},
        scheduler={"poll_interval_seconds": 0.2},
    )
    return Taskmill(settings=settings)


@pytest.fixture
async def prefix(redis_available: None) -> AsyncIterator[str]:
    name = f"taskmill-test-{uuid.uuid4().hex[:10]}"
    yield name
    await backends.delete_prefix(name)


async def _status(app: Taskmill, job_id: str) -> JobStatus:
    job = await app.get(job_id)
    assert isinstance(job, Job)
    return job.status


async def test_two_executors_leave_a_paused_queues_jobs_queued_until_resumed(
    postgres_url: str, prefix: str
) -> None:
    first, second = _app(postgres_url, prefix), _app(postgres_url, prefix)
    release = asyncio.Event()
    ran: list[str] = []

    async def report(ctx: TaskContext, payload: Any) -> None:
        ran.append(ctx.job_id)
        if payload == "long":
            await release.wait()

    for app in (first, second):
        app.task("report", queue="reports")(report)
        app.task("other")(report)
    await first.start()
    await second.start()
    try:
        long = await first.schedule("report", "long")
        await wait_for(lambda: _is(first, long.id, JobStatus.RUNNING))
        await first.pause_queue("reports")
        await asyncio.sleep(1.5)  # past every executor's refresh of the paused list
        waiting = [await first.schedule("report", n) for n in range(6)]
        other = await first.schedule("other", "x")
        await wait_for(lambda: _is(first, other.id, JobStatus.SUCCEEDED))
        release.set()  # the job running when the queue was paused finishes
        await wait_for(lambda: _is(first, long.id, JobStatus.SUCCEEDED))
        await asyncio.sleep(1.0)  # both executors had their chance, and took nothing
        assert [await _status(first, j.id) for j in waiting] == [JobStatus.QUEUED] * 6
        waiting_reason = await first.runtime.jobs.waiting_reason(await _job(first, waiting[0]))
        assert waiting_reason is not None and "'reports' is paused" in waiting_reason

        # A restart keeps the pause: it lives in the database.
        await second.stop()
        second = _app(postgres_url, prefix)
        second.task("report", queue="reports")(report)
        second.task("other")(report)
        await second.start()
        await asyncio.sleep(1.5)
        assert [await _status(first, j.id) for j in waiting] == [JobStatus.QUEUED] * 6

        assert await second.resume_queue("reports")
        for job in waiting:
            await wait_for(lambda job=job: _is(first, job.id, JobStatus.SUCCEEDED))  # type: ignore[misc]
    finally:
        release.set()
        await first.stop()
        await second.stop()


async def _job(app: Taskmill, job: Job | Any) -> Job:
    found = await app.get(job.id)
    assert isinstance(found, Job)
    return found


async def _is(app: Taskmill, job_id: str, status: JobStatus) -> bool:
    return await _status(app, job_id) is status


async def test_library_refuses_a_bad_queue_name(sqlite_url: str, tmp_path: Path) -> None:
    app = Taskmill(settings=load_settings("test", None, database={"url": sqlite_url}))
    try:
        with pytest.raises(ValidationError, match="name"):
            await app.pause_queue("no spaces allowed")
        assert await app.paused_queues() == []
    finally:
        await app.stop()


# -- the API --------------------------------------------------------------------------------


async def test_api_pause_resume_needs_admin_and_a_valid_name(api: Api) -> None:  # noqa: F811
    client = api.client
    refused = await client.post("/queues/reports/pause", headers=api.a)
    assert refused.status_code == 403
    bad = await client.post("/queues/no%20spaces/pause", headers=api.admin)
    assert bad.status_code == 422 and "name" in bad.text
    too_long = await client.post(f"/queues/{'q' * 101}/pause", headers=api.admin)
    assert too_long.status_code == 422
    assert (await client.get("/queues/paused", headers=api.a)).json() == []

    paused = await client.post("/queues/reports/pause", headers=api.admin)
    assert paused.status_code == 200
    assert paused.json()["paused"] is True and paused.json()["paused_by"].startswith("api_key:")
    listed = (await client.get("/queues/paused", headers=api.b)).json()
    assert [q["name"] for q in listed] == ["reports"]  # every tenant sees shared queues

    job = await api.job(api.a, queue="reports")
    seen = (await client.get(f"/jobs/{job['id']}", headers=api.a)).json()
    assert "paused" in (seen["waiting_reason"] or "")

    resumed = await client.post("/queues/reports/resume", headers=api.admin)
    assert resumed.json() == {
        "name": "reports",
        "paused": False,
        "paused_at": None,
        "paused_by": None,
    }
    assert (await client.get("/queues/paused", headers=api.a)).json() == []
