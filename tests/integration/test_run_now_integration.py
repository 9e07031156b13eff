"""POST /jobs/{id}/run-now: a scheduled job queued at once, with its event, and started
by a worker without waiting for the poll. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from taskmill import Taskmill
from taskmill.core.tenants import ALL_MERCHANTS, Scope
from taskmill.store import jobs as job_store
from taskmill.testing import run_until_idle
from tests.conftest import wait_for
from tests.integration.api_fixtures import NOW, Api, api, serve_api
from tests.integration.test_jobs_service_integration import SLOW

__all__ = ["api"]


async def _run_now(api: Api, job_id: str, headers: dict[str, str]) -> Any:
    return await api.client.post(f"/jobs/{job_id}/run-now", headers=headers)


async def test_run_now_queues_a_scheduled_job_with_its_event(api: Api) -> None:
    later = await api.job(api.a, delay_seconds=3600)
    assert later["status"] == "scheduled"

    answer = await _run_now(api, later["id"], api.a)

    assert answer.status_code == 200, answer.text
    job = answer.json()
    assert (job["id"], job["status"]) == (later["id"], "queued")
    assert datetime.fromisoformat(job["run_at"]) == NOW  # due now, not in an hour
    events = (await api.client.get("/events", params={"job_id": later["id"]}, headers=api.a)).json()
    last = events["items"][-1]
    assert last["type"] == "job.queued"
    assert last["actor"].startswith("api_key:")
    assert (last["data"]["from"], last["data"]["to"]) == ("scheduled", "queued")
    assert set(last["data"]["changes"]) == {"status", "run_at", "queued_at"}
    assert [e["type"] for e in events["items"]] == ["job.created", "job.queued"]


@pytest.mark.parametrize("state", ["queued", "succeeded", "cancelled"])
async def test_run_now_refuses_a_job_not_scheduled(api: Api, state: str) -> None:
    made = await api.job(api.a, delay_seconds=3600)
    if state == "cancelled":
        await api.client.post(f"/jobs/{made['id']}/cancel", headers=api.a)
    else:
        assert (await _run_now(api, made["id"], api.a)).status_code == 200
        if state == "succeeded":
            await run_until_idle(api.app)

    answer = await _run_now(api, made["id"], api.a)

    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["type"] == "conflict"
    assert state in answer.json()["error"]["message"]


async def test_run_now_refuses_a_job_waiting_on_its_dependency(api: Api) -> None:
    upstream = await api.job(api.a, delay_seconds=3600)
    downstream = await api.job(api.a, depends_on=[upstream["id"]])

    answer = await _run_now(api, downstream["id"], api.a)

    assert answer.status_code == 409, answer.text
    assert "waits on another job" in answer.json()["error"]["message"]
    got = await job_store.get_job(api.runtime.db, downstream["id"], ALL_MERCHANTS)
    assert got.status.value == "scheduled"


async def test_run_now_another_merchants_job_is_not_found(api: Api) -> None:
    theirs = await api.job(api.b, delay_seconds=3600)

    answer = await _run_now(api, theirs["id"], api.a)

    assert answer.status_code == 404, answer.text
    got = await job_store.get_job(api.runtime.db, theirs["id"], ALL_MERCHANTS)
    assert got.status.value == "scheduled"


async def test_run_now_needs_jobs_write(api: Api) -> None:
    made = await api.job(api.a, delay_seconds=3600)
    reader = {"x-api-key": await api.key([Scope.JOBS_READ])}

    assert (await _run_now(api, made["id"], reader)).status_code == 403


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(database_url, tmp_path, **SLOW) as holder:
        await holder.app.start()
        yield holder


async def _status(api: Api, job_id: str) -> str:
    return (await job_store.get_job(api.runtime.db, job_id, ALL_MERCHANTS)).status.value


async def test_run_now_a_worker_starts_it_without_waiting_for_the_poll(served: Api) -> None:
    """The poll interval is 60 s and the job is due in an hour: only the wake-up run now
    sends can start it within the wait."""
    later = await served.job(served.b, payload="hi", delay_seconds=3600)
    assert (await _run_now(served, later["id"], served.b)).status_code == 200

    async def succeeded() -> bool:
        return await _status(served, later["id"]) == "succeeded"

    await wait_for(succeeded, timeout=10)


async def test_run_now_wakes_the_executor_of_another_runtime(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two runtimes on one PostgreSQL database, as two processes: the API's (running no
    service) and the executor's, woken by the transition's notification."""
    async with serve_api(postgres_url, tmp_path, **SLOW) as api:
        executor = Taskmill(settings=api.app.settings, clock=api.clock)

        @executor.task("echo", max_retries=0)
        async def echo(ctx: Any, payload: Any) -> Any:
            return payload

        await executor.start()
        try:
            later = await api.job(api.b, payload="hi", delay_seconds=3600)
            assert (await _run_now(api, later["id"], api.b)).status_code == 200

            async def succeeded() -> bool:
                return await _status(api, later["id"]) == "succeeded"

            await wait_for(succeeded, timeout=10)
        finally:
            await executor.stop()
