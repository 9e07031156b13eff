"""GET /queues (a merchant's queues: depth, due age, running, recent outcomes) and the
jobs each worker runs now in GET /workers, scoped to the key's merchant (every merchant's
for an admin key). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from taskmill.store import claims, workers
from taskmill.store.schema import events
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api, serve_api

__all__ = ["api"]


@pytest.fixture
async def alpha(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The API, its worker serving queue ``alpha`` (not ``beta``)."""
    async with serve_api(database_url, tmp_path, worker={"queues": ["alpha"]}) as holder:
        yield holder


async def _get(api: Api, path: str, headers: dict[str, str]) -> Any:
    answer = await api.client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _queued_now(api: Api, headers: dict[str, str], **body: Any) -> str:
    made = await api.job(headers, delay_seconds=3600, **body)
    answer = await api.client.post(f"/jobs/{made['id']}/run-now", headers=headers)
    assert answer.status_code == 200, answer.text
    job_id: str = made["id"]
    return job_id


async def _age_events(api: Api, job_id: str, by: timedelta) -> None:
    """Move a job's events into the past, as if it had finished ``by`` earlier."""
    async with api.runtime.db.transaction() as conn:
        found = select(events.c.id, events.c.occurred_at).where(events.c.job_id == job_id)
        for event_id, at in (await conn.execute(found)).all():
            moved = update(events).where(events.c.id == event_id).values(occurred_at=at - by)
            await conn.execute(moved)


async def _running_on_w1(api: Api) -> tuple[str, str]:
    """One job of A and one of B in queue ``beta``, running on worker ``w1``."""
    mine = await _queued_now(api, api.a, queue="beta")
    theirs = await _queued_now(api, api.b, queue="beta")
    db = api.runtime.db
    await workers.register(db, "w1", "host", 1, ["beta"], 10, ["echo"])
    params = claims.ClaimParams("w1", 10, 60, ["beta"], ["echo"])
    assert {j.id for j in await claims.claim(db, params)} == {mine, theirs}
    return mine, theirs


async def test_queues_count_each_queue_of_the_merchant(alpha: Api) -> None:
    api = alpha
    finished = [await api.job(api.a, queue="alpha", payload=n) for n in range(4)]
    await api.job(api.a, queue="alpha", payload="fail")
    await api.job(api.b, queue="alpha", payload="ok")  # another merchant's: not counted
    await run_until_idle(api.app)
    await _age_events(api, finished[0]["id"], timedelta(minutes=10))  # in the hour only
    await _age_events(api, finished[1]["id"], timedelta(hours=2))  # in neither window
    await api.job(api.a, queue="alpha")  # due now, not queued yet
    await api.job(api.a, queue="alpha")
    await api.job(api.a, queue="alpha", delay_seconds=3600)  # not due
    await _queued_now(api, api.a, queue="alpha")
    await _running_on_w1(api)
    api.clock.advance(30)

    body = await _get(api, "/queues", api.a)

    assert body["truncated"] is False
    assert body["items"] == [
        {
            "queue": "alpha",
            "state": "active",
            "paused_at": None,
            "paused_by": None,
            "queued": 1,
            "scheduled": 3,
            "running": 0,
            "oldest_due_age_seconds": 30.0,
            "succeeded_5m": 2,
            "failed_5m": 1,
            "succeeded_60m": 3,
            "failed_60m": 1,
        },
        {
            "queue": "beta",
            "state": "active",
            "paused_at": None,
            "paused_by": None,
            "queued": 0,
            "scheduled": 0,
            "running": 1,
            "oldest_due_age_seconds": None,
            "succeeded_5m": 0,
            "failed_5m": 0,
            "succeeded_60m": 0,
            "failed_60m": 0,
        },
    ]
    theirs = await _get(api, "/queues", api.b)
    assert [(q["queue"], q["running"], q["succeeded_60m"]) for q in theirs["items"]] == [
        ("alpha", 0, 1),
        ("beta", 1, 0),
    ]


async def test_queues_none_yet(api: Api) -> None:
    body = await _get(api, "/queues", api.a)
    assert (body["items"], body["truncated"]) == ([], False)


async def test_workers_show_only_the_merchants_running_jobs(api: Api) -> None:
    mine, theirs = await _running_on_w1(api)

    def running(listed: list[dict[str, Any]]) -> tuple[list[str], int]:
        [w1] = [w for w in listed if w["id"] == "w1"]
        return sorted(j["job_id"] for j in w1["running"]), w1["running_total"]

    assert running(await _get(api, "/workers", api.a)) == ([mine], 1)
    assert running(await _get(api, "/workers", api.b)) == ([theirs], 1)
    assert running(await _get(api, "/workers", api.admin)) == (sorted([mine, theirs]), 2)
    [w1] = await _get(api, "/workers", api.a)
    [job] = w1["running"]
    assert (job["task_type"], job["attempt"]) == ("echo", 1)
    assert job["running_seconds"] >= 0
    assert "merchant_id" not in job  # a merchant's key learns nothing of other merchants
