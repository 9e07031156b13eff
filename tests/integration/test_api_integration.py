"""Every endpoint through HTTP (ASGI transport) on a real SQLite file."""

from __future__ import annotations

from datetime import timedelta

from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import NOW, Api, api

__all__ = ["api"]


async def test_api_integration_create_get_and_run_job(api: Api) -> None:
    created = await api.job(api.a, payload={"x": 1}, priority=5, queue="default")
    assert created["kind"] == "job" and created["status"] == "scheduled"
    await run_until_idle(api.app)
    got = await api.client.get(f"/jobs/{created['id']}", headers=api.a)
    assert got.status_code == 200
    body = got.json()
    assert body["status"] == "succeeded" and body["result"] == {"x": 1} and body["priority"] == 5
    runs = await api.client.get(f"/jobs/{created['id']}/runs", headers=api.a)
    assert [r["outcome"] for r in runs.json()] == ["succeeded"]


async def test_api_integration_one_time_and_delay(api: Api) -> None:
    at = (NOW + timedelta(hours=1)).isoformat()
    one_time = await api.job(api.a, run_at=at)
    assert one_time["schedule_type"] == "one_time" and one_time["run_at"].startswith(
        "2026-11-23T13"
    )
    delayed = await api.job(api.a, delay_seconds=30)
    assert delayed["run_at"].startswith("2026-11-23T12:00:30")


async def test_api_integration_recurring_kinds_create_templates(api: Api) -> None:
    every = await api.client.post(
        "/jobs", json={"task_type": "echo", "interval_seconds": 60}, headers=api.a
    )
    assert every.status_code == 201 and every.json()["kind"] == "template"
    assert every.headers["location"] == f"/templates/{every.json()['id']}"
    cron = await api.client.post(
        "/jobs", json={"task_type": "echo", "cron": "0 0 0 * * *"}, headers=api.a
    )
    assert cron.json()["kind"] == "template" and cron.json()["schedule_type"] == "cron"


async def test_api_integration_idempotency_key_answers_200_same_job(api: Api) -> None:
    first = await api.client.post(
        "/jobs", json={"task_type": "echo", "idempotency_key": "order-1"}, headers=api.a
    )
    second = await api.client.post(
        "/jobs", json={"task_type": "echo", "idempotency_key": "order-1"}, headers=api.a
    )
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    listed = await api.client.get("/jobs", headers=api.a)
    assert len(listed.json()["items"]) == 1
    # The same key in another merchant is another job.
    other = await api.client.post(
        "/jobs", json={"task_type": "echo", "idempotency_key": "order-1"}, headers=api.b
    )
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


async def test_api_integration_dependencies_validated(api: Api) -> None:
    upstream = await api.job(api.a)
    down = await api.job(api.a, depends_on=[upstream["id"]])
    assert down["status"] == "scheduled"
    missing = await api.client.post(
        "/jobs", json={"task_type": "echo", "depends_on": ["nope"]}, headers=api.a
    )
    assert missing.status_code == 422
    assert missing.json()["error"]["fields"][0]["field"] == "depends_on"
    cross = await api.client.post(
        "/jobs", json={"task_type": "echo", "depends_on": [upstream["id"]]}, headers=api.b
    )
    assert cross.status_code == 422  # another merchant's job is as good as missing


async def test_api_integration_list_filters_and_keyset_pages(api: Api) -> None:
    ids = []
    for i in range(7):
        api.clock.advance(1)
        ids.append((await api.job(api.a, payload=i))["id"])
    await api.job(api.a, payload="fail")
    await run_until_idle(api.app)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3, "status": "succeeded", "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.client.get("/jobs", params=params, headers=api.a)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    failed = (await api.client.get("/jobs?status=failed", headers=api.a)).json()["items"]
    assert [j["payload"] for j in failed] == ["fail"]
    window: dict[str, str | int] = {
        "created_after": (NOW + timedelta(seconds=3)).isoformat(),
        "limit": 50,
    }
    recent = (await api.client.get("/jobs", params=window, headers=api.a)).json()["items"]
    assert len(recent) == 6  # created at +3 s .. +7 s, and the failing one
    bad = await api.client.get("/jobs?cursor=not-a-cursor", headers=api.a)
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "cursor"


async def test_api_integration_cancel_and_retry(api: Api) -> None:
    job = await api.job(api.a, delay_seconds=3600)
    cancelled = await api.client.post(
        f"/jobs/{job['id']}/cancel", json={"reason": "not needed"}, headers=api.a
    )
    assert cancelled.status_code == 200 and cancelled.json()["cancel_reason"] == "not needed"
    again = await api.client.post(f"/jobs/{job['id']}/cancel", headers=api.a)
    assert again.status_code == 409 and again.json()["error"]["type"] == "conflict"
    failing = await api.job(api.a, payload="fail")
    await run_until_idle(api.app)
    retried = await api.client.post(f"/jobs/{failing['id']}/retry", headers=api.a)
    assert retried.status_code == 200 and retried.json()["status"] == "scheduled"
    not_failed = await api.client.post(f"/jobs/{job['id']}/retry", headers=api.a)
    assert not_failed.status_code == 409


async def test_api_integration_templates_crud_patch_preview(api: Api) -> None:
    body = {
        "name": "nightly",
        "task_type": "echo",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
    }
    created = await api.client.post("/templates", json=body, headers=api.a)
    assert created.status_code == 201
    tid = created.json()["id"]
    assert created.json()["next_run_at"] == "2026-11-24T01:30:00Z"
    duplicate = await api.client.post("/templates", json=body, headers=api.a)
    assert duplicate.status_code == 409
    off = await api.client.patch(f"/templates/{tid}", json={"active": False}, headers=api.a)
    assert off.status_code == 200 and off.json()["active"] is False
    assert off.json()["next_run_at"] is None
    moved = await api.client.patch(
        f"/templates/{tid}", json={"active": True, "cron": "0 6 * * *"}, headers=api.a
    )
    assert moved.json()["next_run_at"] == "2026-11-24T05:00:00Z"
    bad = await api.client.patch(f"/templates/{tid}", json={"cron": "0 25 * * *"}, headers=api.a)
    assert bad.status_code == 422 and "hour" in bad.json()["error"]["fields"][0]["reason"]
    preview = await api.client.get(f"/templates/{tid}/preview?count=3", headers=api.a)
    assert [f["at"][:10] for f in preview.json()] == ["2026-11-24", "2026-11-25", "2026-11-26"]
    listed = await api.client.get("/templates", headers=api.a)
    assert [t["id"] for t in listed.json()["items"]] == [tid]
    deleted = await api.client.delete(f"/templates/{tid}", headers=api.a)
    assert deleted.status_code == 204
    gone = await api.client.get(f"/templates/{tid}", headers=api.a)
    assert gone.status_code == 404


async def test_api_integration_template_create_validation(api: Api) -> None:
    both = {"name": "x", "task_type": "echo", "cron": "* * * * *", "interval_seconds": 5}
    assert (await api.client.post("/templates", json=both, headers=api.a)).status_code == 422
    zone = {"name": "x", "task_type": "echo", "cron": "* * * * *", "timezone": "Mars/Olympus"}
    response = await api.client.post("/templates", json=zone, headers=api.a)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "timezone"
    listed = await api.client.get("/templates", headers=api.a)
    assert listed.json()["items"] == []  # nothing half-written


async def test_api_integration_events_filter_and_actor(api: Api) -> None:
    job = await api.job(api.a)
    await run_until_idle(api.app)
    events = (await api.client.get(f"/events?job_id={job['id']}", headers=api.a)).json()
    types = [e["type"] for e in events["items"]]
    assert types == ["job.created", "job.queued", "job.started", "job.succeeded"]
    assert events["items"][0]["actor"].startswith("api_key:tm_")
    assert events["items"][1]["actor"] == "queue-populator"
    page = (await api.client.get("/events?limit=2&type=job.created", headers=api.a)).json()
    assert all(e["type"] == "job.created" for e in page["items"])
    first = (await api.client.get("/events?limit=1", headers=api.a)).json()
    after = first["next_cursor"]
    second = (await api.client.get(f"/events?limit=1&after_id={after}", headers=api.a)).json()
    assert second["items"][0]["id"] > first["items"][0]["id"]


async def test_api_integration_workers_and_health(api: Api) -> None:
    workers = await api.client.get("/workers", headers=api.a)
    assert workers.status_code == 200 and isinstance(workers.json(), list)
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}
    docs = await api.client.get("/openapi.json")
    assert docs.status_code == 200 and "/jobs" in docs.json()["paths"]


async def test_api_integration_readyz_503_when_schema_behind(api: Api) -> None:
    from taskmill.store import migrate

    await migrate.downgrade(api.runtime.db, "base")
    ready = await api.client.get("/readyz")
    assert ready.status_code == 503 and "revision" in ready.json()["reason"]


async def test_api_integration_admin_merchants_and_keys(api: Api) -> None:
    merchant = await api.client.post("/merchants", json={"name": "acme"}, headers=api.admin)
    assert merchant.status_code == 201
    mid = merchant.json()["id"]
    names = [m["name"] for m in (await api.client.get("/merchants", headers=api.admin)).json()]
    assert "acme" in names and "default" in names
    issued = await api.client.post(
        "/api-keys",
        json={"merchant_id": mid, "name": "acme-writer", "scopes": ["jobs:write", "jobs:read"]},
        headers=api.admin,
    )
    assert issued.status_code == 201
    secret = issued.json()["secret"]
    key_id = issued.json()["key"]["id"]
    assert secret.startswith(issued.json()["key"]["prefix"])
    made = await api.client.post("/jobs", json={"task_type": "echo"}, headers={"x-api-key": secret})
    assert made.status_code == 201
    listed = await api.client.get(f"/api-keys?merchant_id={mid}", headers=api.admin)
    assert [k["id"] for k in listed.json()] == [key_id]
    assert "secret" not in listed.text and secret not in listed.text
    revoked = await api.client.post(f"/api-keys/{key_id}/revoke", headers=api.admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    after = await api.client.get("/jobs", headers={"x-api-key": secret})
    assert after.status_code == 401
    unknown = await api.client.post(
        "/api-keys",
        json={"merchant_id": "no-such", "name": "x", "scopes": ["jobs:read"]},
        headers=api.admin,
    )
    assert unknown.status_code == 404
