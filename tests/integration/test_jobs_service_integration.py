"""One jobs service for every door: a job created or cancelled through the REST API is as
prompt as one created or cancelled through the library, because the service, not the
door, sends the wake-ups (issue 19).

The poll interval and heartbeat are set far above the waits below, so only a wake-up can
make each test pass in time: before the jobs service, the API woke nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import jobs as job_store
from tests.conftest import wait_for
from tests.integration.api_fixtures import Api, serve_api

SLOW = {
    "scheduler": {"poll_interval_seconds": 60, "worker_dead_after_seconds": 150},
    "worker": {"lease_seconds": 120, "heartbeat_seconds": 60},
}


class Sleeper:
    """A handler that runs until cancelled, and says when it started and stopped."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()

    def register(self, app: Taskmill) -> None:
        @app.task("sleeper", max_retries=0)
        async def sleeper(ctx: TaskContext, payload: Any) -> None:
            self.started.set()
            try:
                await asyncio.sleep(600)
            finally:
                self.stopped.set()


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(database_url, tmp_path, **SLOW) as api:
        await api.app.start()
        yield api


async def _status(api: Api, job_id: str) -> str:
    job = await job_store.get_job(api.runtime.db, job_id, ALL_MERCHANTS)
    return job.status.value


async def test_jobs_service_an_api_job_starts_without_waiting_for_the_poll(served: Api) -> None:
    made = await served.job(served.b, payload="hi")

    async def succeeded() -> bool:
        return await _status(served, made["id"]) == "succeeded"

    await wait_for(succeeded, timeout=10)  # the poll would take 60 s


async def test_jobs_service_an_api_cancel_stops_the_running_handler(served: Api) -> None:
    sleeper = Sleeper()
    sleeper.register(served.app)
    made = await served.job(served.b, task_type="sleeper")
    await asyncio.wait_for(sleeper.started.wait(), 10)
    answer = await served.client.post(
        f"/jobs/{made['id']}/cancel", json={"reason": "stop"}, headers=served.b
    )
    assert answer.status_code == 200, answer.text
    await asyncio.wait_for(sleeper.stopped.wait(), 5)  # the heartbeat would take 60 s
    assert await _status(served, made["id"]) == "cancelled"


async def test_jobs_service_a_cancel_reaches_the_executor_of_another_runtime(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two runtimes on one PostgreSQL database, as two processes are: the API's and the
    executor's. The cancel's notification reaches the executor that runs the job."""
    sleeper = Sleeper()
    async with serve_api(postgres_url, tmp_path, **SLOW) as api:
        executor_app = Taskmill(settings=api.app.settings)
        sleeper.register(executor_app)
        sleeper.register(api.app)  # the API checks the task type; it runs no service
        await executor_app.start()
        try:
            made = await api.job(api.b, task_type="sleeper")
            await asyncio.wait_for(sleeper.started.wait(), 10)
            answer = await api.client.post(
                f"/jobs/{made['id']}/cancel", json={"reason": "stop"}, headers=api.b
            )
            assert answer.status_code == 200, answer.text
            await asyncio.wait_for(sleeper.stopped.wait(), 5)
        finally:
            await executor_app.stop()
