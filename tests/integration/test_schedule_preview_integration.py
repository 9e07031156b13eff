"""POST /schedules/preview: a schedule's next fires while it is being edited, checked as
creating a template checks it (the same 422s naming the same fields). Both databases.
(Not under /templates: any /templates/<word> is also /templates/{template_id}.)"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from taskmill.core.tenants import Scope
from tests.integration.api_fixtures import NOW, Api, api

__all__ = ["api"]


async def _preview(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await api.client.post("/schedules/preview", json=body, headers=headers or api.a)


async def test_schedule_preview_lists_next_fires_with_the_spring_forward_flagged(api: Api) -> None:
    """Europe/Berlin skips 02:00-03:00 on Sunday 28 March 2027: 02:30 that day is moved to
    the change (03:00 CEST, 01:00 UTC) and flagged; the days around it are not."""
    body = {"cron": "30 2 * * *", "timezone": "Europe/Berlin", "start_at": "2027-03-25T00:00Z"}
    answer = await _preview(api, body | {"count": 5})

    assert answer.status_code == 200, answer.text
    fires = answer.json()
    assert [(f["at"][:16], f["local"][:16], f["dst_affected"]) for f in fires] == [
        ("2027-03-25T01:30", "2027-03-25T02:30", False),
        ("2027-03-26T01:30", "2027-03-26T02:30", False),
        ("2027-03-27T01:30", "2027-03-27T02:30", False),
        ("2027-03-28T01:00", "2027-03-28T03:00", True),
        ("2027-03-29T00:30", "2027-03-29T02:30", False),
    ]


async def test_schedule_preview_ten_by_default_and_an_interval_from_now(api: Api) -> None:
    answer = await _preview(api, {"interval_seconds": 90})

    assert answer.status_code == 200, answer.text
    fires = [datetime.fromisoformat(f["at"]) for f in answer.json()]
    assert fires == [NOW + timedelta(seconds=90 * i) for i in range(10)]  # as a new one fires


async def test_schedule_preview_stores_nothing(api: Api) -> None:
    await _preview(api, {"cron": "@hourly"})
    assert (await api.client.get("/templates", headers=api.a)).json()["items"] == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "not a cron"}, "cron"),
    ({"cron": "@daily", "timezone": "Mars/Olympus"}, "timezone"),
    ({"interval_seconds": 0.5}, "interval_seconds"),  # below scheduler.min_interval_seconds
    ({"interval_seconds": 0}, "interval_seconds"),  # below the schema's floor
    ({"cron": "x" * 201}, "cron"),
    ({"cron": "@daily", "timezone": ""}, "timezone"),
    ({"cron": "@daily", "start_at": "2027-01-01T00:00"}, "start_at"),  # no offset
]


@pytest.mark.parametrize(("schedule", "field"), BAD)
async def test_schedule_preview_refuses_what_template_creation_refuses(
    api: Api, schedule: dict[str, Any], field: str
) -> None:
    preview = await _preview(api, schedule)
    created = await api.client.post(
        "/templates", json={"name": "n", "task_type": "echo", **schedule}, headers=api.a
    )

    assert preview.status_code == created.status_code == 422, preview.text
    assert [f["field"] for f in preview.json()["error"]["fields"]] == [field]
    assert preview.json()["error"]["fields"] == created.json()["error"]["fields"]


@pytest.mark.parametrize(
    "body",
    [{}, {"cron": "@daily", "interval_seconds": 60}, {"cron": "@daily", "count": 101}],
)
async def test_schedule_preview_needs_exactly_one_schedule_and_a_bounded_count(
    api: Api, body: dict[str, Any]
) -> None:
    answer = await _preview(api, body)
    assert answer.status_code == 422, answer.text


async def test_schedule_preview_needs_templates_read(api: Api) -> None:
    jobs_only = {"x-api-key": await api.key([Scope.JOBS_READ, Scope.JOBS_WRITE])}
    reader = {"x-api-key": await api.key([Scope.TEMPLATES_READ])}
    assert (await _preview(api, {"cron": "@daily"}, jobs_only)).status_code == 403
    assert (await _preview(api, {"cron": "@daily"}, reader)).status_code == 200
