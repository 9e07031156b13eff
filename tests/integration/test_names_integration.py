"""Seed 003's task ids: a job or template is got and cancelled by the caller's own name."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskmill.core.errors import NotFound
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.templates import Template
from taskmill.testing import FrozenClock
from tests.integration.api_fixtures import NOW, Api, api, build_app

__all__ = ["api"]


async def test_app_gets_and_cancels_a_template_by_its_name(
    database_url: str, tmp_path: Path
) -> None:
    app = build_app(database_url, FrozenClock(NOW), tmp_path)
    try:
        made = await app.schedule("echo", cron="0 0 * * *", name="daily-report")
        assert isinstance(made, Template)
        got = await app.get("daily-report")
        assert isinstance(got, Template) and got.id == made.id
        off = await app.cancel("daily-report")
        assert isinstance(off, Template) and off.id == made.id and not off.active
    finally:
        await app.stop()


async def test_app_gets_and_cancels_a_job_by_its_idempotency_key(
    database_url: str, tmp_path: Path
) -> None:
    app = build_app(database_url, FrozenClock(NOW), tmp_path)
    try:
        made = await app.schedule("echo", delay=3600, idempotency_key="invoice-42")
        got = await app.get("invoice-42")
        assert isinstance(got, Job) and got.id == made.id
        cancelled = await app.cancel("invoice-42")
        assert isinstance(cancelled, Job) and cancelled.status is JobStatus.CANCELLED
        assert (await app.get(made.id)).id == made.id  # ids still work
        with pytest.raises(NotFound):
            await app.get("no-such-name")
    finally:
        await app.stop()


async def test_api_gets_a_template_by_name_only_for_its_merchant(api: Api) -> None:
    body = {"name": "daily-report", "task_type": "echo", "cron": "0 0 * * *"}
    created = await api.client.post("/templates", json=body, headers=api.a)
    assert created.status_code == 201, created.text
    by_name = await api.client.get("/templates/daily-report", headers=api.a)
    assert by_name.status_code == 200
    assert by_name.json()["id"] == created.json()["id"]
    other = await api.client.get("/templates/daily-report", headers=api.b)
    assert other.status_code == 404
