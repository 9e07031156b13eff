"""Waiting for a job's result (issue 22): ``app.wait`` and ``GET /jobs/{id}?wait=``.

The waiters' poll is set to a minute here, so only a wake-up can answer in time: this
process's worker (SQLite, PostgreSQL) or, from another process, PostgreSQL's
``taskmill_finished`` notification.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import NotFound, ValidationError
from taskmill.core.jobs import Job, JobStatus
from tests.integration.api_fixtures import Api, serve_api

SLOW = {"scheduler": {"poll_interval_seconds": 60, "wait_poll_seconds": 60}}


def make_app(url: str, **sections: Any) -> Taskmill:
    app = Taskmill(settings=load_settings("test", None, database={"url": url}, **sections))

    @app.task("work", max_retries=0)
    async def work(ctx: TaskContext, payload: Any) -> Any:
        if payload == "fail":
            raise RuntimeError("asked to fail")
        return {"done": payload}

    return app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    app = make_app(database_url, **SLOW)
    await app.open()
    yield app
    await app.stop()


async def scheduled(app: Taskmill, payload: Any, **kw: Any) -> Job:
    job = await app.schedule("work", payload, **kw)
    assert isinstance(job, Job)
    return job


async def test_wait_returns_the_finished_job_with_its_result_or_error(app: Taskmill) -> None:
    await app.start()
    ok, bad = await scheduled(app, 1), await scheduled(app, "fail")
    done, failed = await asyncio.gather(app.wait(ok.id, timeout=20), app.wait(bad.id, timeout=20))
    assert done.status is JobStatus.SUCCEEDED and done.result == {"done": 1}
    assert failed.status is JobStatus.FAILED and "asked to fail" in (failed.last_error or "")
    assert (await app.wait(ok.id, timeout=0)).id == ok.id  # finished: at once


async def test_wait_on_a_cancelled_job_returns_it(app: Taskmill) -> None:
    job = await scheduled(app, 1, delay=3600)
    waiting = asyncio.create_task(app.wait(job.id, timeout=20))
    await asyncio.sleep(0)
    await app.cancel(job.id)
    assert (await waiting).status is JobStatus.CANCELLED


async def test_wait_times_out_with_timeout_error_and_forgets_the_waiter(app: Taskmill) -> None:
    job = await scheduled(app, 1, delay=3600)
    with pytest.raises(TimeoutError, match="did not finish"):
        await app.wait(job.id, timeout=0.2)
    assert app.runtime.waiters.waiting == 0


@pytest.mark.parametrize("timeout", [-1.0, 3601.0, math.nan, math.inf])
async def test_wait_refuses_a_timeout_out_of_bounds(sqlite_url: str, timeout: float) -> None:
    app = make_app(sqlite_url)
    try:
        with pytest.raises(ValidationError) as refused:
            await app.wait("any", timeout=timeout)
        assert refused.value.field == "timeout"
    finally:
        await app.stop()


async def test_wait_on_an_unknown_job_is_not_found(app: Taskmill) -> None:
    with pytest.raises(NotFound):
        await app.wait("00000000-0000-0000-0000-00000000beef", timeout=1)
    assert app.runtime.waiters.waiting == 0


async def test_waiters_in_another_process_hear_postgres_notifications(postgres_url: str) -> None:
    """A producer process (no services) waits on 300 jobs another process runs: one
    notification wakes its one watcher, which reads them all in few queries."""
    worker = make_app(postgres_url, worker={"concurrency": 50})
    producer = make_app(postgres_url, **SLOW)
    try:
        await worker.start()
        jobs = await producer.schedule_many("work", list(range(300)))
        done = await asyncio.gather(*(producer.wait(j.id, timeout=60) for j in jobs))
        assert [j.result for j in done] == [{"done": i} for i in range(300)]
        # One read per check, for every waiter at once: fewer reads than waiters.
        assert producer.runtime.waiters.checks < len(jobs)
    finally:
        await producer.stop()
        await worker.stop()


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(database_url, tmp_path, **SLOW) as api:
        yield api


async def test_api_wait_answers_when_the_job_finishes(served: Api) -> None:
    await served.app.start()
    made = await served.job(served.a, payload="hi")
    response = await served.client.get(f"/jobs/{made['id']}?wait=20", headers=served.a)
    assert response.status_code == 200
    assert response.json()["status"] == "succeeded" and response.json()["result"] == "hi"


async def test_api_wait_that_ends_first_answers_the_job_as_it_is(served: Api) -> None:
    made = await served.job(served.a, payload="later", delay_seconds=3600)
    response = await served.client.get(f"/jobs/{made['id']}?wait=0.2", headers=served.a)
    assert response.status_code == 200 and response.json()["status"] == "scheduled"
    assert served.runtime.waiters.waiting == 0


async def test_api_wait_on_another_merchants_job_is_404_at_once(served: Api) -> None:
    made = await served.job(served.a, payload="mine", delay_seconds=3600)
    response = await served.client.get(f"/jobs/{made['id']}?wait=60", headers=served.b)
    assert response.status_code == 404
    assert made["id"] not in response.text and "mine" not in response.text
    assert served.runtime.waiters.waiting == 0


@pytest.mark.parametrize("wait", ["-1", "61", "nan", "soon"])
async def test_api_wait_out_of_bounds_is_422_naming_wait(
    sqlite_url: str, tmp_path: Path, wait: str
) -> None:
    async with serve_api(sqlite_url, tmp_path, **SLOW) as api:
        made = await api.job(api.a, payload="x", delay_seconds=3600)
        response = await api.client.get(f"/jobs/{made['id']}?wait={wait}", headers=api.a)
        assert response.status_code == 422
        assert "wait" in response.text


async def test_finished_jobs_reads_at_most_a_thousand_ids(app: Taskmill) -> None:
    store = app.runtime.store
    assert await store.finished_jobs([]) == []
    with pytest.raises(ValidationError) as refused:
        await store.finished_jobs([str(i) for i in range(1001)])
    assert refused.value.field == "job_ids"
    job = await scheduled(app, 1, delay=3600)
    assert await store.finished_jobs([job.id]) == []
    await app.cancel(job.id)
    assert [j.id for j in await store.finished_jobs([job.id, "unknown"])] == [job.id]
