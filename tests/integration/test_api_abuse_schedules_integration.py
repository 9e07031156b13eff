"""Abuse cases of issue 18 on schedules: each was a 500 or stored garbage; now a 422
naming the field, and nothing is stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill.core.errors import ValidationError
from taskmill.store.schema import jobs, templates
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]

BASE = {"name": "t", "task_type": "echo"}


async def _templates(api: Api) -> int:
    async with api.runtime.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(templates))).scalar_one())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "* * * * *", "timezone": "America"}, "timezone"),  # IsADirectoryError
        ({"cron": "* * * * *", "timezone": "Etc"}, "timezone"),
        ({"interval_seconds": 60, "timezone": "Nope/Zone"}, "timezone"),  # was stored
        ({"interval_seconds": 60, "timezone": "Europe"}, "timezone"),
        ({"cron": "0 0 0 */31 2 5#5"}, "cron"),  # AssertionError: never fires
        ({"cron": "0 * * * *", "start_at": "9999-06-01T00:00:00Z"}, "start_at"),  # Overflow
        ({"interval_seconds": 60, "start_at": "9999-06-01T00:00:00Z"}, "start_at"),
        ({"interval_seconds": 60, "end_at": "9999-06-01T00:00:00Z"}, "end_at"),
    ],
)
async def test_api_abuse_schedule_input_is_422_naming_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    before = await _templates(api)
    response = await api.client.post("/templates", json={**BASE, **body}, headers=api.a)
    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in response.json()["error"]["fields"]]
    assert await _templates(api) == before


async def test_api_abuse_one_time_job_in_9999_is_422_naming_run_at(api: Api) -> None:
    """A job's ``run_at`` has the schedules' bound too: nothing can overflow after it
    (a retry's backoff, a lease) and nothing is stored."""
    async with api.runtime.db.read() as conn:
        before = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
    body = {"task_type": "echo", "run_at": "9999-12-31T23:59:59Z"}
    response = await api.client.post("/jobs", json=body, headers=api.a)
    assert response.status_code == 422, response.text
    assert "run_at" in [f["field"] for f in response.json()["error"]["fields"]]
    async with api.runtime.db.read() as conn:
        after = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
    assert after == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delay": 1e12}, "delay"),  # OverflowError before: now + timedelta(1e12 s)
        ({"delay": float("nan")}, "delay"),
        ({"delay": -1}, "delay"),
        ({"run_at": datetime(9999, 12, 31, tzinfo=UTC)}, "run_at"),
    ],
)
async def test_api_abuse_library_bounds_a_job_s_time(
    api: Api, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await api.app.schedule("echo", **kwargs)
    assert refused.value.field == field
