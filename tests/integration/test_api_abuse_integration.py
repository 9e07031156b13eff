"""RELIABILITY.md S20-S25 and S34 against the in-process API, on SQLite and PostgreSQL.

Routes are enumerated from the app itself, so a new route is probed without editing
these tests (and a route these tests do not know how to fill in fails them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import event, func, select

from taskmill.api.app import ROUTERS
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.tenants import Scope
from taskmill.services import api_keys as key_format
from taskmill.store import schema
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import ALL_SCOPES, NOW, Api, api, serve_api
from tests.plan import plan_size, sized

__all__ = ["api"]
JSON = {"content-type": "application/json"}
PUBLIC = {"/healthz", "/readyz"}


def _routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every (method, route) the API serves behind a key (not the docs or the UI)."""
    served = {getattr(r, "path", None) for router in ROUTERS for r in router.routes}
    found = []
    stack = list(app.routes)
    while stack:
        route = stack.pop(0)
        included = getattr(route, "original_router", None)  # FastAPI's lazily included router
        if included is not None:
            stack += included.routes
        elif isinstance(route, APIRoute) and route.path in served and route.path not in PUBLIC:
            found += [(method, route) for method in sorted(route.methods or ())]
    return found


def _scope_of(route: APIRoute) -> Scope:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        scope = getattr(dep.call, "required_scope", None)
        if scope is not None:
            return Scope(scope)
        stack.extend(dep.dependencies)
    raise AssertionError(f"{route.path} declares no scope (deny by default)")


async def _counts(api: Api) -> dict[str, int]:
    counts = {}
    async with api.runtime.db.read() as conn:
        for table in schema.metadata.sorted_tables:
            stmt = select(func.count()).select_from(table)
            counts[table.name] = (await conn.execute(stmt)).scalar_one()
    return counts


async def _checksum(api: Api, merchant: str) -> str:
    """A digest of every row of ``merchant`` in every table that holds tenant data."""
    digest = hashlib.sha256()
    async with api.runtime.db.read() as conn:
        job_ids = select(schema.jobs.c.id).where(schema.jobs.c.merchant_id == merchant)
        for table in schema.metadata.sorted_tables:
            if "merchant_id" in table.c:
                where = table.c.merchant_id == merchant
            elif "job_id" in table.c:
                where = table.c.job_id.in_(job_ids)
            else:
                continue
            stmt = select(table).where(where).order_by(*table.primary_key.columns)
            for row in (await conn.execute(stmt)).all():
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


async def _tenant_data(api: Api, headers: dict[str, str], jobs: int, templates: int) -> None:
    """``jobs`` jobs (some failed, some due later) and ``templates`` templates, run."""
    for n in range(jobs):
        body: dict[str, Any] = {"payload": "fail" if n % 5 == 0 else n}
        if n % 7 == 0:
            body["delay_seconds"] = 3600
        await api.job(headers, **body)
    for n in range(templates):
        response = await api.client.post(
            "/templates",
            json={"name": f"t{n}", "task_type": "echo", "interval_seconds": 86400},
            headers=headers,
        )
        assert response.status_code == 201, response.text
    await run_until_idle(api.app)


# --- S20 -------------------------------------------------------------------------------

FORBIDDEN_FIELDS = ["merchant_id", "status", "attempts", "attempt", "id", "created_at"]


async def test_api_abuse_s20_mass_assignment_refused_rows_unchanged(api: Api) -> None:
    """S20: bodies setting merchant_id, status, attempts, id, created_at -> 422 naming the
    field as not permitted, on every route that takes a body; rows and counts unchanged."""
    job = await api.job(api.a, delay_seconds=3600)
    template = await api.client.post(
        "/templates",
        json={"name": "mine", "task_type": "echo", "interval_seconds": 60},
        headers=api.a,
    )
    valid: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/jobs"): {"task_type": "echo"},
        ("POST", "/jobs/{job_id}/cancel"): {"reason": "r"},
        ("POST", "/jobs/bulk/cancel"): {"ids": [job["id"]], "reason": "r"},
        ("POST", "/jobs/bulk/retry"): {"ids": [job["id"]]},
        ("POST", "/templates"): {"name": "n2", "task_type": "echo", "cron": "@daily"},
        ("PATCH", "/templates/{template_id}"): {"active": False},
        ("POST", "/schedules/preview"): {"cron": "@daily"},
        ("POST", "/merchants"): {"name": "m"},
        ("POST", "/api-keys"): {"merchant_id": api.merchant_b, "name": "k", "scopes": ["admin"]},
    }
    assert api.asgi is not None
    with_body = {(m, r.path) for m, r in _routes(api.asgi) if r.body_field is not None}
    assert with_body == set(valid)  # a new route with a body must be added above
    ids = {"job_id": job["id"], "template_id": template.json()["id"]}
    await api.client.get("/merchants", headers=api.admin)  # its last_used_at is now set
    before_rows = await _checksum(api, DEFAULT_MERCHANT_ID)
    before = await _counts(api)
    for (method, path), body in valid.items():
        for field in (f for f in FORBIDDEN_FIELDS if f not in body):
            response = await api.client.request(
                method, path.format(**ids), json=body | {field: "x"}, headers=api.admin
            )
            assert response.status_code == 422, (method, path, field, response.text)
            problem = response.json()["error"]["fields"]
            assert {"field": field, "reason": "Extra inputs are not permitted"} in problem
    assert await _counts(api) == before
    assert await _checksum(api, DEFAULT_MERCHANT_ID) == before_rows


MALFORMED = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"priority": ' + b"7" * 5000 + b"}",
    b'{"name": "\xff\xfe"}',
    b'{"name": "a", "name": "b"}',
    b'{"priority": NaN}',
    b'{"priority": -Infinity}',
    b"{",
    b"   ",
]


async def test_api_abuse_s20_malformed_bodies_on_every_route(api: Api) -> None:
    """S20: 100,000-deep JSON, a 5,000-digit integer, invalid UTF-8, duplicate keys, NaN
    -> 4xx with the error body on every route taking a body; wrong Content-Type -> 415;
    0 partial rows (every table's row count equal before and after)."""
    job = await api.job(api.a, delay_seconds=3600)
    template = await api.client.post(
        "/templates", json={"name": "x", "task_type": "echo", "cron": "@daily"}, headers=api.a
    )
    ids = {"job_id": job["id"], "template_id": template.json()["id"], "key_id": "k"}
    before = await _counts(api)
    assert api.asgi is not None
    routes = [(m, r.path) for m, r in _routes(api.asgi) if r.body_field is not None]
    for method, path in routes:
        url = path.format(**ids)
        for raw in MALFORMED:
            response = await api.client.request(method, url, content=raw, headers=api.admin | JSON)
            assert 400 <= response.status_code < 500, (method, path, raw[:30], response.text)
            assert {"type", "message", "fields"} <= response.json()["error"].keys()
        wrong = await api.client.request(
            method, url, content=b'{"name": "a"}', headers=api.admin | {"content-type": "text/xml"}
        )
        assert wrong.status_code == 415, (method, path)
        assert wrong.json()["error"]["type"] == "unsupported_media_type"
    assert await _counts(api) == before


# --- S21 -------------------------------------------------------------------------------

INJECTIONS = [
    "' OR 1=1--",
    "' OR '1'='1",
    '" OR ""="',
    "1; DROP TABLE jobs;--",
    "'; DELETE FROM jobs; --",
    "1' UNION SELECT * FROM api_keys--",
    "1 UNION SELECT key_hash FROM api_keys",
    "%",
    "_",
    "\\",
    "%%",
    "a%",
    "%_%",
    "[a-z]",
    "\x00",
    "a\x00b",
    "\u0430dmin",  # Cyrillic a
    "\uff45\uff43\uff48\uff4f",  # fullwidth "echo"
    "e\u0301cho",
    "\u202eohce",
    "😀",
    "x" * 10_000,
    "%" * 10_000,
    "-1",
    "0",
    "99999999999999999999999999",
    "1e308",
    "NaN",
    "null",
    "true",
    "[]",
    "{}",
    "$where",
    '{"$gt": ""}',
    "default",
    "../../etc/passwd",
    "%2e%2e%2f",
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "1 OR sleep(5)",
    "1) OR (1=1",
    "admin'--",
    "*",
    "?",
    ";",
    "' ",
    "\n\r",
    "\t",
    "scheduled' OR status='running",
]
assert len(INJECTIONS) == 50

SORT_LIKE = {"sort", "order", "order_by", "sort_by", "q", "search", "name"}
# Each sort or search parameter there is, with the tests that show it safe: ``order`` is
# one of two words; ``q`` is a LIKE with its wildcards escaped, scoped to the merchant
# (tests/integration/test_api_jobs_list_integration.py, the conformance suite's
# test_conformance_listing.py, and the injection strings below).
ALLOWED_SORT_LIKE = {("/jobs", "order"), ("/jobs", "q")}


async def test_api_abuse_s21_injection_strings_in_every_query_parameter(api: Api) -> None:
    """S21: 50 injection strings in every query parameter of every GET route: 0 x 5xx,
    0 rows of the other tenant, every table's row count unchanged. A sort parameter or a
    search (a LIKE) must be in ``ALLOWED_SORT_LIKE``, with its tests: adding one without
    them fails here."""
    await _tenant_data(api, api.b, jobs=3, templates=1)
    mine = await api.job(api.a)
    template = await api.client.post(
        "/templates", json={"name": "x", "task_type": "echo", "cron": "@daily"}, headers=api.a
    )
    ids = {"job_id": mine["id"], "template_id": template.json()["id"]}
    theirs = await _checksum(api, api.merchant_b)
    async with api.runtime.db.read() as conn:
        b_ids = set((await conn.execute(select(schema.jobs.c.id))).scalars()) - {mine["id"]}
    before = await _counts(api)
    assert api.asgi is not None
    probed = 0
    for method, route in _routes(api.asgi):
        params = [p.alias for p in route.dependant.query_params]
        unexpected = {(route.path, p) for p in SORT_LIKE & set(params)} - ALLOWED_SORT_LIKE
        assert not unexpected, unexpected
        if method != "GET":
            continue
        admin_route = _scope_of(route) is Scope.ADMIN
        headers = api.admin if admin_route else api.a
        for param in params:
            for value in INJECTIONS:
                response = await api.client.get(
                    route.path.format(**ids), params={param: value}, headers=headers
                )
                probed += 1
                assert response.status_code < 500, (route.path, param, value[:20])
                if response.status_code >= 400:
                    assert response.json()["error"]["type"] in {"validation_error", "not_found"}
                elif not admin_route:
                    assert not any(b in response.text for b in b_ids), (route.path, param)
                    assert api.merchant_b not in response.text
    assert probed >= 15 * len(INJECTIONS)
    assert await _counts(api) == before
    assert await _checksum(api, api.merchant_b) == theirs


async def test_api_abuse_s21_filters_match_literally(api: Api) -> None:
    """S21: filters are exact matches, so LIKE wildcards and quotes match nothing."""
    mine = await api.job(api.a)
    for value in ["ech%", "e_ho", "%", "echo' OR '1'='1", "ECHO"]:
        found = await api.client.get("/jobs", params={"task_type": value}, headers=api.a)
        assert found.status_code == 200 and found.json()["items"] == []
    exact = await api.client.get("/jobs", params={"task_type": "echo"}, headers=api.a)
    assert [j["id"] for j in exact.json()["items"]] == [mine["id"]]


# --- S22 -------------------------------------------------------------------------------

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/jobs/{job_id}/cancel"): {"reason": "probe"},
    ("PATCH", "/templates/{template_id}"): {"active": False, "name": "stolen"},
}


async def test_api_abuse_s22_bola_every_route_with_other_tenants_ids(api: Api) -> None:
    """S22: B has 50 jobs (run, failed, scheduled), 10 templates, runs and events. Key A
    calls every route and method taking an id with each of B's ids -> 404, body
    byte-identical to a random id's; B's id filters (/events?job_id=, /jobs?template_id=)
    and merchant_id=B on every list -> none of B's rows; B's rows' checksum unchanged."""
    await _tenant_data(api, api.b, jobs=50, templates=10)
    await _tenant_data(api, api.a, jobs=2, templates=1)
    async with api.runtime.db.read() as conn:
        b_jobs = list(
            (
                await conn.execute(
                    select(schema.jobs.c.id).where(schema.jobs.c.merchant_id == api.merchant_b)
                )
            ).scalars()
        )
        b_templates = list(
            (
                await conn.execute(
                    select(schema.templates.c.id).where(
                        schema.templates.c.merchant_id == api.merchant_b
                    )
                )
            ).scalars()
        )
        assert (await conn.execute(select(func.count()).select_from(schema.job_runs))).scalar()
    assert len(b_jobs) >= 50 and len(b_templates) == 10  # and the templates' first jobs
    theirs = {"job_id": b_jobs, "template_id": b_templates}
    before = await _checksum(api, api.merchant_b)
    assert api.asgi is not None
    probes = 0
    for method, route in _routes(api.asgi):
        names = set(route.param_convertors)
        if not names or _scope_of(route) is Scope.ADMIN:
            continue  # admin routes are cross-tenant by design (key ids are not tenant data)
        [name] = names
        assert name in theirs, f"{route.path}: which ids does {name} take?"
        body = BODIES.get((method, route.path))
        random = await api.client.request(
            method, route.path.format(**{name: str(uuid.uuid4())}), json=body, headers=api.a
        )
        assert random.status_code == 404
        for ident in theirs[name]:
            probe = await api.client.request(
                method, route.path.format(**{name: ident}), json=body, headers=api.a
            )
            probes += 1
            assert (probe.status_code, probe.content) == (404, random.content), route.path
    assert probes >= 6 * 50 + 4 * 10
    leaks = 0
    for query in (
        *(f"/events?job_id={j}" for j in b_jobs[:10]),
        *(f"/events?template_id={t}" for t in b_templates),
        *(f"/jobs?template_id={t}" for t in b_templates),
    ):
        response = await api.client.get(query, headers=api.a)
        assert response.status_code == 200 and response.json()["items"] == []
    for method, route in _routes(api.asgi):
        if method != "GET" or route.param_convertors or _scope_of(route) is Scope.ADMIN:
            continue
        response = await api.client.get(
            route.path, params={"merchant_id": api.merchant_b, "limit": 500}, headers=api.a
        )
        assert response.status_code in (200, 422), route.path
        leaks += sum(ident in response.text for ident in b_jobs + b_templates)
        leaks += api.merchant_b in response.text
    assert leaks == 0
    assert await _checksum(api, api.merchant_b) == before


# --- S23 -------------------------------------------------------------------------------

SCOPE_SETS: list[frozenset[Scope]] = [
    *(frozenset({s}) for s in ALL_SCOPES),
    frozenset({Scope.JOBS_READ, Scope.TEMPLATES_READ}),
    frozenset(ALL_SCOPES),
    frozenset({Scope.ADMIN}),
]


async def test_api_abuse_s23_authorization_matrix_from_the_routes(api: Api) -> None:
    """S23: every route x scope set, generated from the app's routes: a key lacking the
    route's declared scope gets 403 with the error body, a key holding it (or admin)
    never gets 401/403; every route declares a scope (deny by default)."""
    assert api.asgi is not None
    routes = _routes(api.asgi)
    assert len(routes) >= 20
    keys = {scopes: {"x-api-key": await api.key(list(scopes))} for scopes in SCOPE_SETS}
    job = await api.job(api.a)
    template = await api.client.post(
        "/templates", json={"name": "m", "task_type": "echo", "cron": "@daily"}, headers=api.a
    )
    ids = {
        "job_id": job["id"],
        "template_id": template.json()["id"],
        "key_id": "none",
        "name": "matrix",  # a queue: an admin key pauses, then resumes it
    }
    wrong: list[tuple[str, str, str, int]] = []
    for method, route in routes:
        needed = _scope_of(route)
        for scopes, headers in keys.items():
            allowed = needed in scopes or Scope.ADMIN in scopes
            response = await api.client.request(
                method, route.path.format(**ids), headers=headers | JSON, content=b"{}"
            )
            denied = response.status_code == 403
            if denied != (not allowed) or response.status_code == 401:
                wrong.append((method, route.path, ",".join(sorted(scopes)), response.status_code))
            if denied:
                assert response.json()["error"]["type"] == "forbidden"
    assert wrong == []
    cells = len(routes) * len(SCOPE_SETS)
    assert cells >= 20 * len(SCOPE_SETS)


# --- S24 -------------------------------------------------------------------------------


@asynccontextmanager
async def _second_instance(api: Api, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process's app on the same database (own runtime, own pool)."""
    url = api.runtime.settings.database.url
    async with serve_api(url, tmp_path) as other:
        yield other.client


async def test_api_abuse_s24_expiry_revocation_two_instances(api: Api, tmp_path: Path) -> None:
    """S24: a key valid at T-1 s is 200 then 401 at T+1 s (frozen clock); a revoked key
    is rejected at once by two API instances on the same database; 401 bodies identical
    for unknown, malformed, expired and revoked keys; api_key.revoked written once."""
    expiring = await api.key([Scope.JOBS_READ], expires_at=NOW + timedelta(seconds=1))
    assert (await api.client.get("/jobs", headers={"x-api-key": expiring})).status_code == 200
    api.clock.advance(2)
    expired = await api.client.get("/jobs", headers={"x-api-key": expiring})
    assert expired.status_code == 401
    # The second instance shares the secret file, so it accepts the same keys.
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    (second_dir / "secret").write_bytes((tmp_path / "secret").read_bytes())
    revocable = await api.key([Scope.JOBS_READ])
    async with _second_instance(api, second_dir) as other:
        for client in (api.client, other):
            ok = await client.get("/jobs", headers={"x-api-key": revocable})
            assert ok.status_code == 200
        keys = (await api.client.get("/api-keys", headers=api.admin)).json()
        [key_id] = [k["id"] for k in keys if revocable.startswith(k["prefix"] + "_")]
        for _ in range(2):  # idempotent: one event
            revoked = await other.post(f"/api-keys/{key_id}/revoke", headers=api.admin)
            assert revoked.status_code == 200
        bodies = set()
        for client in (api.client, other):
            response = await client.get("/jobs", headers={"x-api-key": revocable})
            assert response.status_code == 401  # the very next request, no cache
            bodies.add(response.content)
    well_formed, _ = key_format.new_plaintext()
    for candidate in [expiring, well_formed, "tm_", "garbage"]:
        response = await api.client.get("/jobs", headers={"x-api-key": candidate})
        assert response.status_code == 401
        bodies.add(response.content)
    assert len(bodies) == 1
    events = (await api.client.get("/events?type=api_key.revoked", headers=api.admin)).json()
    assert [e["data"]["id"] for e in events["items"]] == [key_id]


# --- S25 -------------------------------------------------------------------------------


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_args: Any) -> None:
        self.count += 1


@pytest.fixture
def queries(api: Api) -> Iterator[QueryCounter]:
    counter = QueryCounter()
    engines = api.runtime.db.sync_engines
    for engine in engines:
        event.listen(engine, "before_cursor_execute", counter)
    yield counter
    for engine in engines:
        event.remove(engine, "before_cursor_execute", counter)


async def test_api_abuse_s25_bad_checksums_cost_no_query(api: Api, queries: QueryCounter) -> None:
    """S25: malformed keys and keys with a bad checksum are rejected without a database
    query (a SQLAlchemy cursor-execute counter stays put); a well-formed one does query."""
    real = await api.key([Scope.JOBS_READ])
    flipped = real[:-1] + ("0" if real[-1] != "0" else "1")
    candidates = [flipped, real[:20], real + "x", "tm_" + "a" * 60, "", "x" * 1000]
    start = queries.count
    for candidate in candidates:
        response = await api.client.get("/jobs", headers={"x-api-key": candidate})
        assert response.status_code == 401
    assert queries.count == start
    well_formed, _ = key_format.new_plaintext()
    await api.client.get("/jobs", headers={"x-api-key": well_formed})
    assert queries.count > start  # the counter does see the prefix lookup


def test_api_abuse_s25_verification_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """S25 (code level): both the checksum and the stored hash are compared with
    ``hmac.compare_digest``."""
    calls: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    plaintext, _ = key_format.new_plaintext()
    assert key_format.parse(plaintext) is not None
    assert len(calls) == 1
    import inspect

    source = inspect.getsource(key_format.ApiKeys.verify)
    assert "hmac.compare_digest(self._hash(plaintext), stored_hash)" in source
    assert "==" not in source.replace("is None", "")


GUESSES = sized(2000, 10_000)


@pytest.mark.slow
@plan_size
async def test_api_abuse_s25_brute_force_throttled_other_client_unaffected(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """S25: one client sends 2,000 random well-formed keys (the plan's 10,000 in the
    plan-size step): the first 20 failures of each minute get 401, then 429 with
    Retry-After; another client's valid key gets 100 % 2xx meanwhile; the failures are
    logged aggregated (<= 1 line per client per minute)."""
    assert api.asgi is not None
    attacker = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api.asgi, client=("198.51.100.7", 40000)),
        base_url="http://taskmill",
    )
    caplog.set_level(logging.WARNING, logger="taskmill.api.auth")
    statuses: dict[int, int] = {}
    legit = []
    started = time.monotonic()
    async with attacker:
        for n in range(GUESSES):
            guess, _ = key_format.new_plaintext()
            response = await attacker.get("/jobs", headers={"x-api-key": guess})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"]["type"] == "too_many_requests"
            if n % 20 == 0:
                legit.append((await api.client.get("/jobs", headers=api.a)).status_code)
    minutes = 1 + int((time.monotonic() - started) // 60)  # windows the attack spanned
    assert set(statuses) == {401, 429} and 20 <= statuses[401] <= 20 * minutes, statuses
    assert legit and all(s == 200 for s in legit)
    lines = [r for r in caplog.records if r.name == "taskmill.api.auth"]
    assert 1 <= len([r for r in lines if "198.51.100.7" in r.getMessage()]) <= minutes


# --- S34 -------------------------------------------------------------------------------


async def test_api_abuse_s34_secrets_never_leak(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """S34: after issuing keys and running requests (good, failed, forbidden, rejected),
    no plaintext key and no database password appears in the logs, the events table, any
    API response (but the one creating the key) or /metrics; auth failures are logged
    without the key; api_key.created events hold no secret."""
    password = "s34-pa55word-" + uuid.uuid4().hex[:8]
    if database_url.startswith("postgresql"):
        url = database_url.replace("postgres@", f"postgres:{password}@", 1)  # trust auth
        assert password in url
    else:
        url = database_url
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    seen: list[bytes] = []
    async with serve_api(url, tmp_path, api={"secret_key": password * 3}) as api:
        secrets += [api.admin["x-api-key"], api.a["x-api-key"], api.b["x-api-key"]]
        created = await api.client.post(
            "/api-keys",
            json={"merchant_id": api.merchant_b, "name": "n", "scopes": ["jobs:read"]},
            headers=api.admin,
        )
        secrets.append(created.json()["secret"])
        fresh = {"x-api-key": secrets[-1]}
        traffic = [
            ("GET", "/jobs", api.a, None),
            ("POST", "/jobs", api.a, {"task_type": "echo", "payload": "fail"}),
            ("POST", "/jobs", fresh, {"task_type": "echo"}),
            ("GET", "/jobs", {"x-api-key": secrets[0][:-1] + "0"}, None),
            ("GET", "/jobs", {"x-api-key": secrets[1] + "x"}, None),
            ("GET", "/jobs", {"authorization": f"Bearer {secrets[2]}"}, None),
            ("GET", "/api-keys", api.admin, None),
            ("GET", "/events?limit=1000", api.admin, None),
            ("GET", "/merchants", api.admin, None),
            ("GET", "/readyz", {}, None),
            ("GET", "/metrics", api.admin, None),
            ("GET", "/metrics", {"authorization": f"Bearer {secrets[0]}"}, None),
            ("GET", "/stats", api.a, None),
        ]
        for method, path, headers, body in traffic:
            response = await api.client.request(method, path, headers=headers, json=body)
            assert response.status_code < 500, path
            seen.append(response.content)
        await run_until_idle(api.app)
        async with api.runtime.db.read() as conn:
            rows = (await conn.execute(select(schema.events))).all()
            keys = (await conn.execute(select(schema.api_keys))).all()
        created_events = [r for r in rows if r.type == "api_key.created"]
        assert len(created_events) == 4
    stored = json.dumps([tuple(map(str, r)) for r in [*rows, *keys]])
    logs = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    responses = b"\n".join(seen)
    for secret in [*secrets, password]:
        assert secret not in logs
        assert secret not in stored
        assert secret.encode() not in responses
    assert any("failed API key authentication" in r.getMessage() for r in caplog.records)


# --- regressions the scenarios found -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        ("GET", "/jobs?task_type=a%00b", None, "task_type"),
        ("GET", "/jobs/a%00b", None, "path"),
        ("POST", "/jobs", {"task_type": "echo", "payload": {"k": ["ok", "a\x00b"]}}, "payload.k.1"),
        ("POST", "/jobs", {"task_type": "echo", "name": "\x00"}, "name"),
    ],
)
async def test_api_abuse_nul_characters_are_422_not_500(
    api: Api, method: str, path: str, body: Any, where: str
) -> None:
    """S20/S21 regression: NUL (U+0000) in a query parameter, the path or a JSON string
    was a 500 on PostgreSQL (text and jsonb cannot hold it); now 422 naming where, on
    both backends, and nothing written."""
    before = await _counts(api)
    response = await api.client.request(method, path, json=body, headers=api.a)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == where
    assert await _counts(api) == before


async def test_api_abuse_disconnect_mid_body_runs_nothing(api: Api) -> None:
    """S27 regression: a client that disconnected before its body was complete had the
    part received handed to the route as the whole body (here: valid JSON, a new job)."""
    assert api.asgi is not None
    part = b'{"task_type": "echo"}'
    messages: list[MutableMapping[str, Any]] = [
        {"type": "http.request", "body": part, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    headers = [(b"x-api-key", api.a["x-api-key"].encode()), (b"content-type", b"application/json")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "query_string": b"",
        "headers": [*headers, (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "root_path": "",
    }
    before = await _counts(api)
    await api.asgi(scope, receive, send)
    assert sent == []  # nobody to answer
    assert await _counts(api) == before


# --- S26 (in process) and S19 (broker) ----------------------------------------------------


async def test_api_abuse_s26_merchant_quota_429_with_retry_after(
    database_url: str, tmp_path: Path
) -> None:
    """S26: with api.requests_per_second_per_merchant, a merchant past its burst gets 429
    with Retry-After and the error body, whichever of its keys it uses; another merchant
    is unaffected; nothing is written by the refused requests."""
    quota = {"requests_per_second_per_merchant": 0.5, "request_burst_per_merchant": 3}
    async with serve_api(database_url, tmp_path, api=quota) as api:
        # serve_api's three keys were issued directly, not through requests: A has 3.
        statuses = [(await api.client.post("/jobs", json={"task_type": "echo"}, headers=api.a))]
        statuses += [await api.client.get("/jobs", headers=api.a) for _ in range(2)]
        assert [r.status_code for r in statuses] == [201, 200, 200]
        before = await _counts(api)
        refused = await api.client.post("/jobs", json={"task_type": "echo"}, headers=api.a)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["type"] == "too_many_requests"
        other_key = await api.client.get("/jobs", headers=api.admin)  # A's admin key
        assert other_key.status_code == 429
        assert (await api.client.get("/jobs", headers=api.b)).status_code == 200
        assert await _counts(api) == before


async def test_api_abuse_s19_broker_messages_carry_only_ids(
    database_url: str, tmp_path: Path, redis_available: None
) -> None:
    """S19: a 512 KiB payload round-trips byte-identical through the API (object key order
    aside: PostgreSQL's jsonb does not keep it), and the Redis
    broker's message for it holds only the job id (< 1 KiB)."""
    import redis.asyncio as aioredis

    prefix = f"s19-{uuid.uuid4().hex[:8]}"
    broker = {"url": "redis://127.0.0.1:6379/0", "prefix": prefix}
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with serve_api(database_url, tmp_path, broker=broker) as api:
            payload = {"blob": 'é\u2603\x01"\\' * (512 * 1024 // 9), "n": [1.5, None, True]}
            created = await api.job(api.a, payload=payload)
            got = await api.client.get(f"/jobs/{created['id']}", headers=api.a)
            assert got.json()["payload"] == payload
            # Byte-identical as JSON; PostgreSQL's jsonb keeps no object key order.
            same = json.dumps(got.json()["payload"], sort_keys=True)
            assert same == json.dumps(payload, sort_keys=True)
            assert created["status"] == "queued"  # and its hint published by the API
            sizes = []
            async for name in client.scan_iter(match=f"{prefix}:*"):
                if await client.type(name) == b"stream":
                    entries: Any = await client.xrange(name)
                    for _id, fields in entries:
                        sizes.append(sum(len(k) + len(v) for k, v in fields.items()))
                        assert created["id"].encode() in fields.values()
            assert sizes and max(sizes) < 1024
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
