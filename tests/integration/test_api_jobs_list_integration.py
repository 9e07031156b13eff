"""The jobs list newest or oldest first, search, wait time, bulk cancel and retry, and
failures grouped by error, through HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskmill.core.tenants import Scope
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]


async def _pages(api: Api, order: str, **filters: Any) -> list[str]:
    """Every id the list returns, page by page (3 a page) in ``order``."""
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "order": order, **filters}
        if cursor:
            params["cursor"] = cursor
        response = await api.client.get("/jobs", params=params, headers=api.a)
        assert response.status_code == 200, response.text
        seen += [j["id"] for j in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return seen


async def test_jobs_list_newest_first_by_default_and_oldest_first_both_paged(api: Api) -> None:
    created: list[tuple[str, str]] = []
    for i in range(7):
        if i != 3:  # jobs 2 and 3 share a created_at: the id breaks the tie
            api.clock.advance(1)
        job = await api.job(api.a, payload=i)
        created.append((job["created_at"], job["id"]))
    await api.job(api.b)  # another merchant's: never listed
    oldest_first = [ident for _, ident in sorted(created)]
    assert await _pages(api, "asc") == oldest_first
    assert await _pages(api, "desc") == oldest_first[::-1]
    default = await api.client.get("/jobs", headers=api.a)
    assert [j["id"] for j in default.json()["items"]] == oldest_first[::-1]


async def test_jobs_list_cursor_of_the_other_order_is_refused(api: Api) -> None:
    for _ in range(3):
        api.clock.advance(1)
        await api.job(api.a)
    first = (await api.client.get("/jobs", params={"limit": 1}, headers=api.a)).json()
    mixed = await api.client.get(
        "/jobs", params={"cursor": first["next_cursor"], "order": "asc"}, headers=api.a
    )
    assert mixed.status_code == 422
    [field] = mixed.json()["error"]["fields"]
    assert field["field"] == "cursor" and "order=desc" in field["reason"]
    same = await api.client.get("/jobs", params={"cursor": first["next_cursor"]}, headers=api.a)
    assert same.status_code == 200 and len(same.json()["items"]) == 2


async def test_jobs_search_by_id_task_type_and_payload_text(api: Api) -> None:
    percent = await api.job(api.a, payload={"note": "100% Refund"})
    api.clock.advance(1)
    plain = await api.job(api.a, payload={"note": "100x refund_due"})
    quoted = await api.job(api.a, payload={"note": 'say "hi"', "who": "Café Zoë"})
    theirs = await api.job(api.b, payload={"note": "100% refund"})

    async def found(q: str, headers: dict[str, str] | None = None) -> set[str]:
        response = await api.client.get("/jobs", params={"q": q}, headers=headers or api.a)
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["items"]}

    assert await found(percent["id"]) == {percent["id"]}
    assert await found(percent["id"][:8]) == set()  # an id matches whole only
    assert await found("ECH") == {percent["id"], plain["id"], quoted["id"]}  # task type
    assert await found("refund") == {percent["id"], plain["id"]}  # any case
    assert await found("100%") == {percent["id"]}  # % is no wildcard
    assert await found("1_0") == set()  # nor is _ (it would match "100")
    assert await found("refund_") == {plain["id"]}
    assert await found('say "hi"') == {quoted["id"]}
    assert await found("café zoë") == {quoted["id"]}
    assert await found(theirs["id"]) == set()  # another merchant's job
    assert await found("100% refund", api.b) == {theirs["id"]}
    both = await api.client.get("/jobs", params={"q": "refund", "order": "asc"}, headers=api.a)
    assert [j["id"] for j in both.json()["items"]] == [percent["id"], plain["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"order": "sideways"}, "order"),
        ({"limit": 0}, "limit"),
    ],
)
async def test_jobs_list_bounds(api: Api, query: dict[str, Any], field: str) -> None:
    response = await api.client.get("/jobs", params=query, headers=api.a)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == f"query.{field}"


async def test_jobs_waited_seconds_from_due_to_start(api: Api) -> None:
    job = await api.job(api.a)
    assert job["waited_seconds"] is None
    await run_until_idle(api.app)
    done = (await api.client.get(f"/jobs/{job['id']}", headers=api.a)).json()
    due = max(datetime.fromisoformat(done["run_at"]), datetime.fromisoformat(done["created_at"]))
    started = datetime.fromisoformat(done["started_at"])
    assert done["waited_seconds"] == pytest.approx((started - due).total_seconds())
    listed = (await api.client.get("/jobs", headers=api.a)).json()["items"]
    assert listed[0]["waited_seconds"] == done["waited_seconds"]


async def test_jobs_bulk_cancel_answers_each_id(api: Api) -> None:
    waiting = await api.job(api.a, delay_seconds=3600)
    finished = await api.job(api.a)
    await run_until_idle(api.app)
    theirs = await api.job(api.b, delay_seconds=3600)
    ids = [waiting["id"], finished["id"], theirs["id"], "no-such-job"]
    response = await api.client.post(
        "/jobs/bulk/cancel", json={"ids": ids, "reason": "tidy up"}, headers=api.a
    )
    assert response.status_code == 200, response.text
    assert response.json()["items"] == [
        {"id": waiting["id"], "outcome": "cancelled", "status": "cancelled"},
        {"id": finished["id"], "outcome": "conflict", "status": "succeeded"},
        {"id": theirs["id"], "outcome": "not_found", "status": None},
        {"id": "no-such-job", "outcome": "not_found", "status": None},
    ]
    got = (await api.client.get(f"/jobs/{waiting['id']}", headers=api.a)).json()
    assert got["cancel_reason"] == "tidy up"
    still = (await api.client.get(f"/jobs/{theirs['id']}", headers=api.b)).json()
    assert still["status"] == "scheduled"


async def test_jobs_bulk_retry_answers_each_id(api: Api) -> None:
    failed = await api.job(api.a, payload="fail")
    waiting = await api.job(api.a, delay_seconds=3600)
    theirs = await api.job(api.b, payload="fail")
    await run_until_idle(api.app)
    ids = [failed["id"], waiting["id"], theirs["id"]]
    response = await api.client.post("/jobs/bulk/retry", json={"ids": ids}, headers=api.a)
    assert response.status_code == 200, response.text
    assert [(i["outcome"], i["status"]) for i in response.json()["items"]] == [
        ("retried", "scheduled"),
        ("conflict", "scheduled"),
        ("not_found", None),
    ]
    mine = (await api.client.get(f"/jobs/{theirs['id']}", headers=api.b)).json()
    assert mine["status"] == "failed"


@pytest.mark.parametrize(
    "body",
    [
        {"ids": []},
        {"ids": [f"id-{i}" for i in range(101)]},
        {"ids": ["a", "a"]},
        {"ids": ["x" * 37]},
    ],
)
async def test_jobs_bulk_bounds(api: Api, body: dict[str, Any]) -> None:
    for action in ("cancel", "retry"):
        response = await api.client.post(f"/jobs/bulk/{action}", json=body, headers=api.a)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["fields"][0]["field"].startswith("ids")


async def test_jobs_bulk_and_failures_need_their_scopes(api: Api) -> None:
    job = await api.job(api.a, delay_seconds=60)
    reader = {"x-api-key": await api.key([Scope.JOBS_READ])}
    writer = {"x-api-key": await api.key([Scope.JOBS_WRITE])}
    for action in ("cancel", "retry"):
        refused = await api.client.post(
            f"/jobs/bulk/{action}", json={"ids": [job["id"]]}, headers=reader
        )
        assert refused.status_code == 403 and "jobs:write" in refused.json()["error"]["message"]
    assert (await api.client.get("/jobs/failures", headers=writer)).status_code == 403
    assert (await api.client.get("/jobs/failures", headers=reader)).status_code == 200
    assert (await api.client.get(f"/jobs/{job['id']}", headers=api.a)).json()["status"] == (
        "scheduled"
    )


async def test_jobs_failures_grouped_by_masked_error(api: Api) -> None:
    slow = [await api.job(api.a, payload={"fail_with": f"timeout after {n}s"}) for n in (31, 32, 7)]
    card = await api.job(api.a, payload={"fail_with": "card 4242 declined\nTraceback: ..."})
    await api.job(api.b, payload={"fail_with": "timeout after 1s"})
    await run_until_idle(api.app)
    response = await api.client.get("/jobs/failures", headers=api.a)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scanned"], body["bounded"]) == (4, False)
    first, second = body["groups"]
    assert (first["key"], first["count"], first["task_types"]) == (
        "RuntimeError: timeout after <n>s",
        3,
        ["echo"],
    )
    assert set(first["job_ids"]) == {j["id"] for j in slow}
    assert first["example"].startswith("RuntimeError: timeout after ")
    assert (second["key"], second["count"], second["job_ids"]) == (
        "RuntimeError: card <n> declined",
        1,
        [card["id"]],
    )
    assert second["example"] == "RuntimeError: card 4242 declined"
    assert second["newest_at"] is not None
    one = await api.client.get("/jobs/failures", params={"limit": 1}, headers=api.a)
    assert [g["count"] for g in one.json()["groups"]] == [3]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    none = await api.client.get("/jobs/failures", params={"since": later}, headers=api.a)
    assert none.json() == {"groups": [], "scanned": 0, "bounded": False}
    for bad in ({"limit": 0}, {"limit": 101}, {"since": "yesterday"}):
        refused = await api.client.get("/jobs/failures", params=bad, headers=api.a)
        assert refused.status_code == 422
        assert refused.json()["error"]["fields"][0]["field"] == f"query.{next(iter(bad))}"
