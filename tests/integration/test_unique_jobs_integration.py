"""Unique jobs (issue 22): while a merchant's job holding a ``unique_key`` is scheduled,
queued or running, scheduling with the key returns it; the database's partial unique
index makes that hold across producers racing each other (ADR 0013)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import Conflict, ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from tests.integration.api_fixtures import Api, serve_api

SLOW = {"scheduler": {"poll_interval_seconds": 60}}


def make_app(url: str) -> Taskmill:
    app = Taskmill(settings=load_settings("test", None, database={"url": url}, **SLOW))

    @app.task("invoice", max_retries=0)
    async def invoice(ctx: TaskContext, payload: Any) -> Any:
        if payload == "fail":
            raise RuntimeError("asked to fail")
        return payload

    return app


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Taskmill]:
    app = make_app(database_url)
    await app.open()
    yield app
    await app.stop()


@pytest.fixture
async def sqlite_app(sqlite_url: str) -> AsyncIterator[Taskmill]:
    """For refusals made before the database is reached: one backend is enough."""
    app = make_app(sqlite_url)
    await app.open()
    yield app
    await app.stop()


async def one(app: Taskmill, payload: Any = None, **kw: Any) -> Job:
    job = await app.schedule("invoice", payload, **kw)
    assert isinstance(job, Job)
    return job


async def test_unique_key_returns_the_unfinished_job_holding_it(app: Taskmill) -> None:
    first = await one(app, 1, unique_key="invoice-42")
    again = await one(app, 2, unique_key="invoice-42")
    other = await one(app, 3, unique_key="invoice-43")
    assert again.id == first.id and again.payload == 1
    assert other.id != first.id
    assert first.unique_key == "invoice-42"
    created = [e for e in await app.events() if e.type is EventType.JOB_CREATED]
    assert len(created) == 2  # the second call wrote nothing


async def test_unique_key_is_free_again_once_the_job_finished(app: Taskmill) -> None:
    first = await one(app, "x", unique_key="invoice-7")
    await app.cancel(first.id)
    second = await one(app, "y", unique_key="invoice-7")
    assert second.id != first.id and second.status is JobStatus.SCHEDULED


async def test_retrying_a_failed_job_whose_key_another_job_holds_is_refused(
    app: Taskmill,
) -> None:
    await app.start()
    first = await one(app, "fail", unique_key="k")
    failed = await app.wait(first.id, timeout=10)
    assert failed.status is JobStatus.FAILED
    await app.stop()
    await app.open()
    holder = await one(app, "again", delay=3600, unique_key="k")
    with pytest.raises(Conflict):
        await app.retry(first.id)
    unchanged = await app.runtime.jobs.get(ALL_MERCHANTS, first.id)
    assert unchanged.status is JobStatus.FAILED
    await app.cancel(holder.id)
    assert (await app.retry(first.id)).status is JobStatus.SCHEDULED


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "1-200 characters"),
        ("x" * 201, "1-200 characters"),
        ("has space", "letters, digits"),
        ("tab\there", "letters, digits"),
    ],
)
async def test_a_bad_unique_key_is_refused_naming_the_field(
    sqlite_app: Taskmill, key: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await one(sqlite_app, unique_key=key)
    assert refused.value.field == "unique_key" and reason in str(refused.value)
    assert await sqlite_app.list() == []


async def test_unique_key_with_an_idempotency_key_or_a_recurring_schedule_is_refused(
    app: Taskmill,
) -> None:
    with pytest.raises(ValidationError) as both:
        await one(app, unique_key="a", idempotency_key="b")
    assert both.value.field == "unique_key" and "idempotency_key" in str(both.value)
    with pytest.raises(ValidationError) as recurring:
        await app.schedule("invoice", interval=60, unique_key="a")
    assert recurring.value.field == "unique_key"
    assert await app.list() == [] and await app.templates() == []


async def test_schedule_many_answers_a_held_key_with_its_job(app: Taskmill) -> None:
    held = await one(app, "held", unique_key="a")
    made = await app.schedule_many(
        "invoice", ["p1", "p2", "p3", "p4"], unique_keys=["a", "b", None, "b"]
    )
    assert made[0].id == held.id
    assert made[1].id == made[3].id and made[1].payload == "p2"
    assert len({j.id for j in made}) == 3
    assert len(await app.list()) == 3
    with pytest.raises(ValidationError) as short:
        await app.schedule_many("invoice", ["p"], unique_keys=[])
    assert short.value.field == "unique_keys"
    with pytest.raises(ValidationError) as bad:
        await app.schedule_many("invoice", ["p", "q"], unique_keys=["ok", "not ok"])
    assert bad.value.field == "jobs[1].unique_key"
    assert len(await app.list()) == 3  # all or nothing


async def test_concurrent_producers_get_one_job_per_key_on_postgres(postgres_url: str) -> None:
    """Four producer processes' worth of engines, 40 calls on 5 keys at once: the index,
    not the look-up, decides, and every loser gets the winner's job."""
    apps = [make_app(postgres_url) for _ in range(4)]
    try:
        for app in apps:
            await app.open()
        calls = [
            one(apps[i % 4], i, unique_key=f"key-{i % 5}")
            for i in range(40)  # one engine's calls race each other too
        ]
        jobs = await asyncio.gather(*calls)
        by_key: dict[str, set[str]] = {}
        for job in jobs:
            assert job.unique_key is not None
            by_key.setdefault(job.unique_key, set()).add(job.id)
        assert all(len(ids) == 1 for ids in by_key.values()), by_key
        assert len(await apps[0].list()) == 5
        many = await asyncio.gather(
            *(apps[i].schedule_many("invoice", [i], unique_keys=["key-0"]) for i in range(4))
        )
        assert {made[0].id for made in many} == by_key["key-0"]
    finally:
        for app in apps:
            await app.stop()


@pytest.fixture
async def served(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(database_url, tmp_path) as api:
        yield api


@pytest.fixture
async def served_sqlite(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(sqlite_url, tmp_path) as api:
        yield api


async def test_api_unique_key_answers_201_then_200_with_the_same_job(served: Api) -> None:
    body = {"task_type": "echo", "payload": 1, "unique_key": "invoice-42", "delay_seconds": 60}
    first = await served.client.post("/jobs", json=body, headers=served.a)
    again = await served.client.post("/jobs", json={**body, "payload": 2}, headers=served.a)
    theirs = await served.client.post("/jobs", json=body, headers=served.b)
    assert (first.status_code, again.status_code, theirs.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"] and again.json()["payload"] == 1
    assert first.json()["unique_key"] == "invoice-42"
    assert theirs.json()["id"] != first.json()["id"]  # per merchant


@pytest.mark.parametrize(
    "extra",
    [
        {"unique_key": ""},
        {"unique_key": "x" * 201},
        {"unique_key": "no spaces"},
        {"unique_key": 42},
        {"unique_key": "k", "idempotency_key": "i"},
        {"unique_key": "k", "interval_seconds": 60},
    ],
)
async def test_api_bad_unique_key_is_422_naming_it(
    served_sqlite: Api, extra: dict[str, Any]
) -> None:
    api = served_sqlite
    response = await api.client.post("/jobs", json={"task_type": "echo", **extra}, headers=api.a)
    assert response.status_code == 422, response.text
    assert "unique_key" in response.text
    listed = await api.client.get("/jobs", headers=api.a)
    assert listed.json()["items"] == []
