"""RELIABILITY.md S38: text the database cannot store (a lone surrogate, NUL, overlong
UTF-8) in any field a request stores is a 4xx; nothing is written; every list endpoint
still answers 200. On SQLite and PostgreSQL, through the API and the library."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill.core.errors import ValidationError
from taskmill.store import schema
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]
JSON = {"content-type": "application/json"}
# JSON text (not Python strings): a lone surrogate cannot be encoded to send otherwise.
SURROGATE = '"bad \\ud800 text"'
NUL = '"bad \\u0000 text"'
LIST_ENDPOINTS = ["/jobs", "/events", "/templates", "/workers", "/stats"]
ADMIN_LISTS = ["/merchants", "/api-keys"]


def _bodies(bad: str) -> list[tuple[str, str, str]]:
    """(method and path, JSON body with ``bad`` in one string field, the field named)."""
    job = '"task_type": "echo"'
    tpl = '"task_type": "echo", "interval_seconds": 3600'
    return [
        ("POST /jobs", f'{{{job}, "payload": {bad}}}', "payload"),
        ("POST /jobs", f'{{{job}, "payload": {{"deep": [1, {{"k": {bad}}}]}}}}', "payload"),
        ("POST /jobs", f'{{{job}, "payload": {{{bad}: 1}}}}', "payload"),
        ("POST /jobs", f'{{"task_type": {bad}}}', "task_type"),
        ("POST /jobs", f'{{{job}, "name": {bad}}}', "name"),
        ("POST /jobs", f'{{{job}, "idempotency_key": {bad}}}', "idempotency_key"),
        ("POST /jobs", f'{{{tpl}, "name": {bad}}}', "name"),
        ("POST /jobs", f'{{{job}, "cron": {bad}}}', "cron"),
        ("POST /jobs", f'{{{job}, "timezone": {bad}, "cron": "* * * * *"}}', "timezone"),
        ("POST /jobs", f'{{{job}, "depends_on": [{bad}]}}', "depends_on"),
        (
            "POST /jobs",
            '{"task_type": "http", "payload": {"url": "https://example.com/", '
            f'"headers": {{"X-Token": {bad}}}}}}}',
            "payload",
        ),
        ("POST /templates", f'{{{tpl}, "name": {bad}}}', "name"),
        ("POST /templates", f'{{{tpl}, "name": "t", "payload": [{bad}]}}', "payload"),
        ("PATCH /templates/{template}", f'{{"name": {bad}}}', "name"),
        ("PATCH /templates/{template}", f'{{"payload": {{"a": {bad}}}}}', "payload"),
        ("POST /jobs/{job}/cancel", f'{{"reason": {bad}}}', "reason"),
        ("POST /merchants", f'{{"name": {bad}}}', "name"),
        ("POST /api-keys", f'{{"merchant_id": "x", "name": {bad}, "scopes": ["admin"]}}', "name"),
    ]


async def _counts(api: Api) -> tuple[int, int, int]:
    async with api.runtime.db.read() as conn:
        return tuple(  # type: ignore[return-value]
            [
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
                for table in (schema.jobs, schema.events, schema.templates)
            ]
        )


async def _lists_answer(api: Api) -> None:
    for path in LIST_ENDPOINTS:
        for headers in (api.a, api.b):
            response = await api.client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.text)
    for path in ADMIN_LISTS:
        response = await api.client.get(path, headers=api.admin)
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("bad", [SURROGATE, NUL], ids=["surrogate", "nul"])
async def test_api_abuse_s38_unencodable_text_stores_nothing(api: Api, bad: str) -> None:
    """S38: each field with a lone surrogate or NUL is a 422 naming it; counts of jobs,
    events and templates are unchanged; every list endpoint still answers 200."""
    job = await api.job(api.a, delay_seconds=3600)
    template = await api.client.post(
        "/templates",
        json={"name": "t0", "task_type": "echo", "interval_seconds": 3600},
        headers=api.a,
    )
    ids = {"job": job["id"], "template": template.json()["id"]}
    before = await _counts(api)
    for route, body, field in _bodies(bad):
        method, path = route.split(" ")
        headers = api.admin if path in ("/merchants", "/api-keys") else api.a
        response = await api.client.request(
            method, path.format(**ids), content=body.encode(), headers={**headers, **JSON}
        )
        assert response.status_code == 422, (route, body, response.text)
        fields = [f["field"] for f in response.json()["error"]["fields"]]
        assert any(f == field or f.startswith(f"{field}.") for f in fields), (route, fields)
    assert await _counts(api) == before
    await _lists_answer(api)


async def test_api_abuse_s38_overlong_utf8_and_bad_headers(api: Api) -> None:
    """Bytes that are not UTF-8 (an overlong ``/``, ``\\xff``) are a 400, a surrogate
    encoded in UTF-8 (which Python's JSON decoder lets through) a 422; a key header with
    bytes outside ASCII is a 401; nothing is stored."""
    before = await _counts(api)
    for raw, status in ((b"\xc0\xaf", 400), (b"\xff", 400), (b"\xed\xa0\x80", 422)):
        body = b'{"task_type": "echo", "payload": "' + raw + b'"}'
        response = await api.client.post("/jobs", content=body, headers={**api.a, **JSON})
        assert response.status_code == status, (raw, response.text)
    for key in (b"tm_\xc0\xaf", b"tm_\xed\xa0\x80", "tm_\u00e9".encode("latin-1")):
        response = await api.client.get("/jobs", headers={b"x-api-key": key})
        assert response.status_code == 401, (key, response.text)
    assert await _counts(api) == before
    await _lists_answer(api)


@pytest.mark.parametrize("bad", ["\ud800", "\x00"], ids=["surrogate", "nul"])
async def test_api_abuse_s38_filters_with_unencodable_text(api: Api, bad: str) -> None:
    """A query filter with NUL or an invalid UTF-8 byte is answered (200 or 422), not
    a database error."""
    await api.job(api.a)
    quoted = "%00" if bad == "\x00" else "%ED%A0%80"
    for path in (f"/jobs?task_type={quoted}", f"/events?job_id={quoted}", f"/jobs/{quoted}"):
        response = await api.client.get(path, headers=api.a)
        assert response.status_code in (200, 404, 422), (path, response.text)
    await _lists_answer(api)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"payload": {"text": "a\ud800b"}}, "payload.text"),
        ({"payload": ["ok", "\x00"]}, "payload[1]"),
        ({"payload": {"\udfff": 1}}, "payload (a key)"),
        ({"payload": None, "name": "n\x00", "interval": 60}, "name"),
        ({"payload": None, "idempotency_key": "k\ud800"}, "idempotency_key"),
    ],
)
async def test_api_abuse_s38_library_refuses_unencodable_text(
    api: Api, options: dict[str, Any], field: str
) -> None:
    """``Taskmill.schedule`` refuses it with ``ValidationError`` naming the field, and
    stores nothing (it used to store the job on SQLite, whose every read then failed)."""
    before = await _counts(api)
    options = dict(options)
    payload = options.pop("payload")
    with pytest.raises(ValidationError) as err:
        await api.app.schedule("echo", payload, **options)
    assert err.value.field == field
    if payload is not None:  # and in a batch, where the other payload is fine
        with pytest.raises(ValidationError) as err:
            await api.app.schedule_many("echo", ["fine", payload])
        assert err.value.field == f"jobs[1].{field}"
    assert await _counts(api) == before
    await _lists_answer(api)
