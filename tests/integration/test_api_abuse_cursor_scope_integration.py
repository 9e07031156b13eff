"""Issue 18: a forged ``cursor`` is a 422 naming it (not a 500), and a template is
created only with ``templates:write``, whichever route creates it."""

from __future__ import annotations

import base64
import json

import pytest

from taskmill.core.tenants import Scope
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]


def _cursor(created: object, ident: object = "x") -> str:
    return base64.urlsafe_b64encode(json.dumps([created, ident]).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("2026-11-23T12:00:00"),  # naive
        _cursor("0001-01-01T00:00:00+14:00"),  # before the first representable instant
        _cursor("9999-12-31T23:59:59-14:00"),  # after the last one
        _cursor(20261123),
        "bm90IGpzb24",  # "not json"
    ],
)
async def test_api_abuse_forged_cursor_refused(api: Api, cursor: str) -> None:
    await api.job(api.a)
    response = await api.client.get("/jobs", params={"cursor": cursor}, headers=api.a)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "cursor"


async def test_api_abuse_cursor_round_trips(api: Api) -> None:
    for _ in range(3):
        await api.job(api.a)
    first = (await api.client.get("/jobs", params={"limit": 2}, headers=api.a)).json()
    rest = await api.client.get(
        "/jobs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=api.a
    )
    assert rest.status_code == 200 and len(rest.json()["items"]) == 1


@pytest.mark.parametrize("schedule", [{"interval_seconds": 60}, {"cron": "*/5 * * * *"}])
async def test_api_abuse_jobs_write_cannot_create_templates(
    api: Api, schedule: dict[str, object]
) -> None:
    """A ``jobs:write`` key could create a template through ``POST /jobs`` that it can
    then neither list, pause nor delete: now a 403 naming ``templates:write``, and
    nothing is stored; with ``templates:write`` too, it is created and manageable."""
    jobs_only = {"x-api-key": await api.key([Scope.JOBS_WRITE, Scope.JOBS_READ])}
    body = {"task_type": "echo", **schedule}
    response = await api.client.post("/jobs", json=body, headers=jobs_only)
    assert response.status_code == 403, response.text
    assert "templates:write" in response.json()["error"]["message"]
    listed = await api.client.get("/templates", headers=api.a)
    assert listed.json()["items"] == []
    both = {"x-api-key": await api.key([Scope.JOBS_WRITE, Scope.TEMPLATES_WRITE])}
    created = await api.client.post("/jobs", json=body, headers=both)
    assert created.status_code == 201 and created.json()["kind"] == "template"
    deleted = await api.client.delete(f"/templates/{created.json()['id']}", headers=both)
    assert deleted.status_code == 204
    # A one-off job still needs only jobs:write.
    assert (
        await api.client.post("/jobs", json={"task_type": "echo"}, headers=jobs_only)
    ).status_code == 201
