"""Bad input answers a clear 4xx naming the field, and writes nothing (RELIABILITY.md S19-S21)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from taskmill.store.schema import events, jobs, templates
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]
JSON = {"content-type": "application/json"}


async def _counts(api: Api) -> tuple[int, int, int]:
    counts = []
    async with api.runtime.db.read() as conn:
        for table in (jobs, templates, events):
            counts.append(
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
    return counts[0], counts[1], counts[2]


@pytest.mark.parametrize("field", ["merchant_id", "status", "attempt", "id", "created_at"])
async def test_api_input_mass_assignment_refused(api: Api, field: str) -> None:
    before = await _counts(api)
    response = await api.client.post("/jobs", json={"task_type": "echo", field: "x"}, headers=api.a)
    assert response.status_code == 422
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == field and "Extra inputs" in problem["reason"]
    assert await _counts(api) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task_type": "echo", "cron": "61 * * * *"}, "cron"),
        ({"task_type": "echo", "cron": "* * * * *", "timezone": "Nowhere/City"}, "timezone"),
        ({"task_type": "echo", "run_at": "2026-01-01T00:00:00"}, "run_at"),  # naive
        # Valid ISO 8601, but before the first instant Python can represent in UTC.
        ({"task_type": "echo", "run_at": "0001-01-01T00:00:00+14:00"}, "run_at"),
        ({"task_type": "echo", "run_at": "9999-12-31T23:59:59-14:00"}, "run_at"),
        # A number is no date-time (pydantic would read it as Unix time; the schema says no).
        ({"task_type": "echo", "run_at": 0}, "run_at"),
        ({"task_type": "echo", "run_at": "1700000000.5"}, "run_at"),
        ({"task_type": "echo", "priority": 10**6}, "priority"),
        ({"task_type": "echo", "max_attempts": 0}, "max_attempts"),
        ({"task_type": "echo", "timeout_seconds": -1}, "timeout_seconds"),
        ({"task_type": "nope"}, "task_type"),
        ({"payload": 1}, "task_type"),
    ],
)
async def test_api_input_invalid_fields_named(
    api: Api, body: dict[str, object], field: str
) -> None:
    before = await _counts(api)
    response = await api.client.post("/jobs", json=body, headers=api.a)
    assert response.status_code == 422, response.text
    assert field in [f["field"] for f in response.json()["error"]["fields"]]
    assert await _counts(api) == before


@pytest.mark.parametrize("name", ["created_after", "created_before", "run_after", "run_before"])
async def test_api_input_unrepresentable_time_filters_are_422(api: Api, name: str) -> None:
    """Found by the fuzzer: such a filter was a 500 (OverflowError converting to UTC)."""
    params = {name: "0001-01-01T00:00:00+14:00"}
    response = await api.client.get("/jobs", params=params, headers=api.a)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == f"query.{name}" and "representable" in problem["reason"]


@pytest.mark.parametrize("name", ["created_after", "created_before", "run_after", "run_before"])
async def test_api_input_numeric_time_filters_are_422(api: Api, name: str) -> None:
    """Found by schemathesis: ``run_before=0.5`` was read as Unix time and answered 200."""
    response = await api.client.get("/jobs", params={name: "0.5"}, headers=api.a)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["fields"]
    assert problem["field"] == f"query.{name}" and "not a number" in problem["reason"]


@pytest.mark.parametrize("path", ["/jobs", "/templates"])
async def test_api_input_cursor_outside_base64url_is_422(api: Api, path: str) -> None:
    response = await api.client.get(path, params={"cursor": "a b/c"}, headers=api.a)
    assert response.status_code == 422, response.text
    assert [f["field"] for f in response.json()["error"]["fields"]] == ["query.cursor"]


async def test_api_input_conflicting_schedules_rejected(api: Api) -> None:
    response = await api.client.post(
        "/jobs", json={"task_type": "echo", "cron": "@daily", "interval_seconds": 5}, headers=api.a
    )
    assert response.status_code == 422
    assert "cannot be combined" in response.json()["error"]["fields"][0]["reason"]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{", "truncated"),
        (b'{"task_type": "echo", "payload": NaN}', "NaN"),
        (b'{"task_type": "echo", "payload": Infinity}', "Infinity"),
        (b'{"task_type": "echo", "task_type": "other"}', "duplicate key"),
        (b'{"task_type": "echo", "payload": ' + b"9" * 5000 + b"}", "digits"),
        (b'{"task_type": "\xff\xfe"}', "utf-8"),
        (b"[" * 100_000 + b"]" * 100_000, "deep"),
        (b'{"payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "depth"),
    ],
)
async def test_api_input_malformed_json_is_400(api: Api, raw: bytes, why: str) -> None:
    before = await _counts(api)
    response = await api.client.post("/jobs", content=raw, headers=api.a | JSON)
    assert response.status_code == 400, (why, response.text)
    assert response.json()["error"]["type"] == "malformed_json"
    assert await _counts(api) == before


async def test_api_input_wrong_content_type_is_415(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b"task_type=echo", headers=api.a | {"content-type": "text/plain"}
    )
    assert response.status_code == 415


async def test_api_input_body_over_limit_is_413(api: Api) -> None:
    big = b'{"task_type": "echo", "payload": "' + b"x" * 2_000_000 + b'"}'
    response = await api.client.post("/jobs", content=big, headers=api.a | JSON)
    assert response.status_code == 413
    assert response.json()["error"]["fields"][0]["field"] == "body"


async def test_api_input_chunked_body_over_limit_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"task_type": "echo", "payload": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = await api.client.post("/jobs", content=chunks(), headers=api.a | JSON)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


async def test_api_input_half_megabyte_payload_round_trips(api: Api) -> None:
    payload = "é" * (256 * 1024)  # 512 KiB of UTF-8
    created = await api.job(api.a, payload=payload)
    got = await api.client.get(f"/jobs/{created['id']}", headers=api.a)
    assert got.json()["payload"] == payload


@pytest.mark.parametrize(
    "value", ["' OR 1=1--", "1; DROP TABLE jobs;--", "%", "_", "\\", "a%", "\u0430dmin", "x" * 150]
)
async def test_api_input_injection_strings_in_filters(api: Api, value: str) -> None:
    await api.job(api.a)
    before = await _counts(api)
    for params in ({"task_type": value}, {"template_id": value[:36]}, {"status": value}):
        response = await api.client.get("/jobs", params=params, headers=api.a)
        assert response.status_code in (200, 422)
        if response.status_code == 200:
            assert response.json()["items"] == []  # matched literally: nothing matches
    assert await _counts(api) == before
