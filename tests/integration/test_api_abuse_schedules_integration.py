"""Abuse cases of issue 18 on schedules: each was a 500 or stored garbage; now a 422
naming the field, and nothing is stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from taskmill.store.schema import templates
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
