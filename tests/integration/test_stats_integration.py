"""GET /stats: the UI overview's numbers, per merchant, from bounded queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from taskmill.core.tenants import Scope
from taskmill.store import stats
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api

__all__ = ["api"]


async def _stats(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.client.get("/stats", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_integration_counts_window_and_lag(api: Api) -> None:
    for payload in ("ok", "ok", "fail"):
        await api.job(api.a, payload=payload)
    await api.job(api.a, payload="ok", max_attempts=3, delay_seconds=3600)  # not due
    doomed = await api.job(api.a, payload="ok", delay_seconds=60)
    await api.client.post(f"/jobs/{doomed['id']}/cancel", headers=api.a)
    await run_until_idle(api.app)

    body = await _stats(api, api.a)
    assert body["unfinished"] == {"scheduled": 1, "queued": 0, "running": 0}
    assert body["window_totals"] == {"succeeded": 2, "failed": 1, "retried": 0, "cancelled": 1}
    minutes = body["per_minute"]
    assert len(minutes) == body["window_minutes"] == 60
    assert sum(m["succeeded"] for m in minutes) == 2 and sum(m["failed"] for m in minutes) == 1
    first, last = (datetime.fromisoformat(minutes[i]["minute"]) for i in (0, -1))
    assert first < last <= datetime.fromisoformat(body["generated_at"])
    assert body["start_lag"]["samples"] == 3
    assert body["start_lag"]["p50_seconds"] <= body["start_lag"]["max_seconds"]
    assert body["due"] == 0 and body["oldest_due_age_seconds"] is None
    assert body["truncated"] is False


async def test_stats_integration_retries_and_backlog_age(api: Api) -> None:
    await api.job(api.a, payload="fail", max_attempts=2)  # fails once, retry scheduled later
    await run_until_idle(api.app)
    await api.job(api.a, payload="ok")  # due now, left waiting
    api.clock.advance(42)

    body = await _stats(api, api.a)
    assert body["window_totals"]["retried"] == 1
    assert body["due"] == 1
    assert body["oldest_due_age_seconds"] == pytest.approx(42)


async def test_stats_integration_only_own_merchant(api: Api) -> None:
    await api.job(api.b, payload="ok")
    await api.job(api.b, payload="fail")
    await run_until_idle(api.app)
    await api.job(api.b, delay_seconds=600)

    mine = await _stats(api, api.a)
    theirs = await _stats(api, api.b)
    assert mine["unfinished"]["scheduled"] == 0 and sum(mine["window_totals"].values()) == 0
    assert mine["start_lag"]["samples"] == 0
    assert theirs["unfinished"]["scheduled"] == 1
    assert theirs["window_totals"]["succeeded"] == 1 and theirs["window_totals"]["failed"] == 1


async def test_stats_integration_scan_limit_marks_truncated(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await api.job(api.a, payload="ok")
    await run_until_idle(api.app)
    # The newest two events are two of the three successes (the last thing that happened).
    monkeypatch.setattr(stats, "EVENT_SCAN_LIMIT", 2)

    body = await _stats(api, api.a)
    assert body["truncated"] is True
    assert body["window_totals"]["succeeded"] == 2


async def test_stats_integration_needs_jobs_read(api: Api) -> None:
    assert (await api.client.get("/stats")).status_code == 401
    key = await api.key([Scope.TEMPLATES_READ])
    forbidden = await api.client.get("/stats", headers={"x-api-key": key})
    assert forbidden.status_code == 403
