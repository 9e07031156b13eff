"""Keys, scopes and tenancy: the checks an attacker probes (RELIABILITY.md S22-S25)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select

from taskmill.api.app import ROUTERS
from taskmill.core.tenants import Scope
from taskmill.services import api_keys as key_format
from taskmill.store.schema import api_keys
from tests.integration.api_fixtures import ALL_SCOPES, NOW, Api, api

__all__ = ["api"]

PUBLIC_ROUTES = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"}


def _required_scopes(route: APIRoute) -> set[Scope]:
    found: set[Scope] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        scope = getattr(dep.call, "required_scope", None)
        if scope is not None:
            found.add(scope)
        stack.extend(dep.dependencies)
    return found


def test_api_security_every_route_declares_a_scope() -> None:
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 20
    missing = [r.path for r in routes if r.path not in PUBLIC_ROUTES and not _required_scopes(r)]
    assert missing == []


# (method, path template, scope it needs, body)
ENDPOINTS: list[tuple[str, str, Scope, dict[str, Any] | None]] = [
    ("POST", "/jobs", Scope.JOBS_WRITE, {"task_type": "echo"}),
    ("GET", "/jobs", Scope.JOBS_READ, None),
    ("GET", "/jobs/{job}", Scope.JOBS_READ, None),
    ("POST", "/jobs/{job}/cancel", Scope.JOBS_WRITE, None),
    ("POST", "/jobs/{job}/retry", Scope.JOBS_WRITE, None),
    ("GET", "/jobs/{job}/runs", Scope.JOBS_READ, None),
    ("POST", "/jobs/{job}/run-now", Scope.JOBS_WRITE, None),
    ("GET", "/queues", Scope.JOBS_READ, None),
    ("GET", "/events", Scope.JOBS_READ, None),
    ("GET", "/workers", Scope.JOBS_READ, None),
    (
        "POST",
        "/templates",
        Scope.TEMPLATES_WRITE,
        {"name": "n", "task_type": "echo", "cron": "@daily"},
    ),
    ("GET", "/templates", Scope.TEMPLATES_READ, None),
    ("GET", "/templates/{template}", Scope.TEMPLATES_READ, None),
    ("PATCH", "/templates/{template}", Scope.TEMPLATES_WRITE, {"active": False}),
    ("DELETE", "/templates/{template}", Scope.TEMPLATES_WRITE, None),
    ("GET", "/templates/{template}/preview", Scope.TEMPLATES_READ, None),
    ("POST", "/schedules/preview", Scope.TEMPLATES_READ, {"cron": "@daily"}),
    ("GET", "/merchants", Scope.ADMIN, None),
    ("POST", "/merchants", Scope.ADMIN, {"name": "m"}),
    ("GET", "/api-keys", Scope.ADMIN, None),
    ("GET", "/admin/templates", Scope.ADMIN, None),
    ("GET", "/admin/templates/{template}", Scope.ADMIN, None),
    ("POST", "/admin/templates/{template}/pause", Scope.ADMIN, None),
]


async def _ids(api: Api, headers: dict[str, str]) -> dict[str, str]:
    job = await api.job(headers)
    template = await api.client.post(
        "/templates",
        json={"name": f"t-{uuid.uuid4().hex[:6]}", "task_type": "echo", "interval_seconds": 60},
        headers=headers,
    )
    return {"job": job["id"], "template": template.json()["id"]}


@pytest.mark.parametrize(("method", "path", "needed", "body"), ENDPOINTS)
@pytest.mark.parametrize("granted", [*ALL_SCOPES, Scope.ADMIN])
async def test_api_security_scope_matrix(
    api: Api,
    method: str,
    path: str,
    needed: Scope,
    body: dict[str, Any] | None,
    granted: Scope,
) -> None:
    ids = await _ids(api, api.a)
    key = await api.key([granted])
    response = await api.client.request(
        method, path.format(**ids), json=body, headers={"x-api-key": key}
    )
    allowed = granted in (needed, Scope.ADMIN)
    if allowed:
        assert response.status_code < 400 or response.status_code == 409, response.text
    else:
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "forbidden"


# Admin routes reach every merchant's ids by design (test_api_admin_templates_*).
WITH_IDS = [e for e in ENDPOINTS if "{" in e[1] and e[2] is not Scope.ADMIN]


@pytest.mark.parametrize(("method", "path", "needed", "body"), WITH_IDS)
async def test_api_security_other_tenant_ids_answer_like_missing_ones(
    api: Api, method: str, path: str, needed: Scope, body: dict[str, Any] | None
) -> None:
    theirs = await _ids(api, api.b)
    missing = {k: str(uuid.uuid4()) for k in theirs}
    before = await api.client.get(f"/jobs/{theirs['job']}", headers=api.b)
    probe = await api.client.request(method, path.format(**theirs), json=body, headers=api.a)
    random = await api.client.request(method, path.format(**missing), json=body, headers=api.a)
    assert probe.status_code == 404 and random.status_code == 404
    assert probe.content == random.content  # byte-identical: no existence oracle
    after = await api.client.get(f"/jobs/{theirs['job']}", headers=api.b)
    assert before.json() == after.json()  # B's job untouched


async def test_api_security_lists_show_only_own_rows(api: Api) -> None:
    await _ids(api, api.a)
    theirs = await _ids(api, api.b)
    jobs = (await api.client.get("/jobs", headers=api.a)).json()["items"]
    assert theirs["job"] not in {j["id"] for j in jobs}
    templates = (await api.client.get("/templates", headers=api.a)).json()["items"]
    assert theirs["template"] not in {t["id"] for t in templates}
    events = (await api.client.get("/events?limit=1000", headers=api.a)).json()["items"]
    assert theirs["job"] not in {e["job_id"] for e in events}
    by_job = await api.client.get(f"/events?job_id={theirs['job']}", headers=api.a)
    assert by_job.json()["items"] == []
    sneaky = await api.client.get(f"/jobs?merchant_id={api.merchant_b}", headers=api.a)
    assert theirs["job"] not in {j["id"] for j in sneaky.json()["items"]}


async def test_api_security_bad_keys_get_one_generic_401(api: Api) -> None:
    expired = await api.key([Scope.JOBS_READ], expires_at=NOW + timedelta(seconds=1))
    revoked_key = await api.key([Scope.JOBS_READ])
    prefix = key_format.parse(revoked_key)
    assert prefix is not None
    async with api.runtime.db.read() as conn:
        key_id = (
            await conn.execute(select(api_keys.c.id).where(api_keys.c.prefix == prefix))
        ).scalar_one()
    valid = await api.client.get("/jobs", headers={"x-api-key": expired})
    assert valid.status_code == 200  # still valid at T-1 s
    api.clock.advance(2)
    await api.client.post(f"/api-keys/{key_id}/revoke", headers=api.admin)
    well_formed, _ = key_format.new_plaintext()
    typo = revoked_key[:-9] + ("A" if revoked_key[-9] != "A" else "B") + revoked_key[-8:]
    bodies = set()
    for candidate in [expired, revoked_key, well_formed, typo, "tm_short", "", "x" * 500]:
        response = await api.client.get("/jobs", headers={"x-api-key": candidate})
        assert response.status_code == 401
        bodies.add(response.content)
    missing = await api.client.get("/jobs")
    assert missing.status_code == 401
    bodies.add(missing.content)
    assert len(bodies) == 1


async def test_api_security_checksum_rejects_without_database(api: Api) -> None:
    real = await api.key([Scope.JOBS_READ])
    assert key_format.parse(real) is not None
    tampered = real[:10] + ("a" if real[10] != "a" else "b") + real[11:]
    assert key_format.parse(tampered) is None  # rejected before any query
    assert key_format.parse(real + "x") is None


async def test_api_security_repeated_failures_throttled_per_client(api: Api) -> None:
    for _ in range(20):
        bad = await api.client.get("/jobs", headers={"x-api-key": "tm_nope"})
        assert bad.status_code == 401
    blocked = await api.client.get("/jobs", headers=api.a)  # even a good key, from this client
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    limiter = api.client._transport.app.state.authenticator.limiter  # type: ignore[attr-defined]
    assert limiter.retry_after("203.0.113.9", 0.0) is None  # other clients are unaffected


async def test_api_security_last_used_updated_at_most_once_a_minute(api: Api) -> None:
    key = await api.key([Scope.JOBS_READ])
    prefix = key_format.parse(key)

    async def last_used() -> Any:
        async with api.runtime.db.read() as conn:
            stmt = select(api_keys.c.last_used_at).where(api_keys.c.prefix == prefix)
            return (await conn.execute(stmt)).scalar_one()

    await api.client.get("/jobs", headers={"x-api-key": key})
    first = await last_used()
    assert first == NOW
    api.clock.advance(30)
    await api.client.get("/jobs", headers={"x-api-key": key})
    assert await last_used() == first
    api.clock.advance(31)
    await api.client.get("/jobs", headers={"x-api-key": key})
    assert await last_used() == NOW + timedelta(seconds=61)


async def test_api_security_key_events_hold_no_secret(api: Api) -> None:
    secret = await api.key([Scope.JOBS_READ])
    events = (await api.client.get("/events?limit=1000", headers=api.admin)).json()["items"]
    created = [e for e in events if e["type"] == "api_key.created"]
    assert created and all(secret not in str(e) for e in events)
    assert all("key_hash" not in e["data"] for e in created)
