"""A queued job whose task type no live worker runs is pointed out — in GET /jobs/{id},
/stats (the UI's overview), /metrics and the failure watcher's log — instead of waiting
without a word."""

from __future__ import annotations

import logging

import pytest

from taskmill.brokers.database import DatabaseBroker
from taskmill.services.failure_watcher import FailureWatcher, FailureWatcherConfig
from taskmill.store import workers
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]


async def _queued_echo(api: Api) -> str:
    job = await api.job(api.a, payload="hi")
    await api.runtime.populator.run_once()
    got = (await api.client.get(f"/jobs/{job['id']}", headers=api.a)).json()
    assert got["status"] == "queued"
    return str(job["id"])


async def _reason(api: Api, job_id: str) -> str | None:
    response = await api.client.get(f"/jobs/{job_id}", headers=api.a)
    assert response.status_code == 200, response.text
    reason: str | None = response.json()["waiting_reason"]
    return reason


async def _unserved(api: Api) -> dict[str, int]:
    response = await api.client.get("/stats", headers=api.a)
    assert response.status_code == 200, response.text
    found: dict[str, int] = response.json()["unserved_task_types"]
    return found


async def test_unserved_task_type_is_said_everywhere_until_a_worker_runs_it(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    await workers.register(api.runtime.db, "w-other", "host", 1, ["default"], 4, ["other"])
    job_id = await _queued_echo(api)
    assert await _reason(api, job_id) == (
        "no live worker runs task type 'echo': it waits until one does"
    )
    assert await _unserved(api) == {"echo": 1}
    scrape = await api.client.get("/metrics", headers=api.admin)
    assert 'taskmill_queued_jobs_without_worker{task_type="echo"} 1.0' in scrape.text
    # Another merchant's /stats says nothing of merchant A's jobs.
    other = await api.client.get("/stats", headers=api.b)
    assert other.json()["unserved_task_types"] == {}
    caplog.set_level(logging.WARNING, logger="taskmill.services.failure_watcher")
    watcher = FailureWatcher(api.runtime.store, DatabaseBroker(), FailureWatcherConfig())
    await watcher.run_once()
    await watcher.run_once()  # checked once a minute: said once
    said = [r.getMessage() for r in caplog.records if "no live worker runs it" in r.getMessage()]
    assert said == [
        "1 queued jobs of task type 'echo' wait: no live worker runs it "
        "(start a worker whose app registers it, or cancel them)"
    ]

    await workers.register(api.runtime.db, "w-echo", "host", 2, ["default"], 4, ["echo"])
    assert await _reason(api, job_id) is None
    assert await _unserved(api) == {}
    scrape = await api.client.get("/metrics", headers=api.admin)
    assert "taskmill_queued_jobs_without_worker{" not in scrape.text


async def test_unserved_a_worker_that_did_not_say_may_run_anything(api: Api) -> None:
    """Workers registered before their task types were recorded: no false alarm."""
    await workers.register(api.runtime.db, "w-old", "host", 1, ["default"], 4)
    job_id = await _queued_echo(api)
    assert await _reason(api, job_id) is None
    assert await _unserved(api) == {}


async def test_unserved_not_said_of_jobs_that_are_not_queued(api: Api) -> None:
    """A scheduled job (not due yet) or a finished one is not waiting for a worker."""
    job = await api.job(api.a, payload="later", delay_seconds=3600)
    assert await _reason(api, str(job["id"])) is None
