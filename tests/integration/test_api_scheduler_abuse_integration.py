"""RELIABILITY.md S35 and S36 through the API: schedules at and past their limits, the
template and pending-job quotas, paginated template lists, and an administrator
finding and stopping any merchant's template."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from taskmill.core.errors import ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.store import schema
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api, serve_api

__all__ = ["api"]

TOO_SHORT = [1e-9, 5e-324, 0.001, 0.999]


def _template(name: str, **schedule: Any) -> dict[str, Any]:
    return {"name": name, "task_type": "echo", **(schedule or {"interval_seconds": 60})}


async def _rows(api: Api, table: str) -> int:
    async with api.runtime.db.read() as conn:
        stmt = select(func.count()).select_from(schema.metadata.tables[table])
        return int((await conn.execute(stmt)).scalar_one())


def _refused(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["fields"][0]["field"] == field, error
    assert "Traceback" not in response.text and "sqlalchemy" not in response.text.lower()


# --- S35: every schedule input at and below its limit ----------------------------------


@pytest.mark.parametrize("seconds", TOO_SHORT)
async def test_api_s35_interval_below_the_minimum_is_refused_everywhere(
    api: Api, seconds: float
) -> None:
    """POST /jobs, POST /templates, PATCH /templates: 422 naming interval_seconds, and
    nothing stored; the minimum itself (1 s) is accepted."""
    ok = await api.client.post("/templates", json=_template("ok"), headers=api.a)
    assert ok.status_code == 201
    before = (await _rows(api, "templates"), await _rows(api, "events"))
    job = {"task_type": "echo", "interval_seconds": seconds}
    _refused(await api.client.post("/jobs", json=job, headers=api.a), 422, "interval_seconds")
    body = _template("short", interval_seconds=seconds)
    _refused(await api.client.post("/templates", json=body, headers=api.a), 422, "interval_seconds")
    patch = {"interval_seconds": seconds}
    url = f"/templates/{ok.json()['id']}"
    _refused(await api.client.patch(url, json=patch, headers=api.a), 422, "interval_seconds")
    assert (await _rows(api, "templates"), await _rows(api, "events")) == before
    minimum = _template("minimum", interval_seconds=1)
    assert (await api.client.post("/templates", json=minimum, headers=api.a)).status_code == 201


async def test_api_s35_min_interval_is_configurable_and_bounded(tmp_path: Path) -> None:
    from taskmill.config import load_settings
    from taskmill.core.errors import ConfigError

    for bad in (0, -1, 1e-9, 86_401):
        with pytest.raises(ConfigError, match="min_interval_seconds"):
            load_settings("test", None, scheduler={"min_interval_seconds": bad})
    async with serve_api(
        f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, scheduler={"min_interval_seconds": 60}
    ) as api:
        short = _template("short", interval_seconds=59)
        response = await api.client.post("/templates", json=short, headers=api.a)
        _refused(response, 422, "interval_seconds")
        assert "at least 60 seconds" in response.json()["error"]["fields"][0]["reason"]


async def test_api_s35_a_stored_bad_template_stops_nothing_and_the_admin_stops_it(
    api: Api,
) -> None:
    """A's template stored with a schedule no validation would pass does not stop the
    recurrence manager; B's template keeps firing; A sees why in last_error; the admin
    key finds it across merchants and can pause and delete it."""
    mine = await api.client.post("/templates", json=_template("b-ticks"), headers=api.b)
    theirs = await api.client.post("/templates", json=_template("a-bad"), headers=api.a)
    bad_id = theirs.json()["id"]
    async with api.runtime.db.transaction() as conn:
        stmt = update(schema.templates).where(schema.templates.c.id == bad_id)
        await conn.execute(stmt.values(interval_seconds=1e-9))
    for _ in range(3):
        await run_until_idle(api.app)  # the services run, and keep running
        api.clock.advance(60)
    fired = await api.client.get(f"/jobs?template_id={mine.json()['id']}&limit=500", headers=api.b)
    assert len(fired.json()["items"]) == 3
    seen = (await api.client.get(f"/templates/{bad_id}", headers=api.a)).json()
    assert seen["active"] is False and seen["next_run_at"] is None
    assert seen["last_error"] == (
        "its schedule cannot be evaluated: interval_seconds: must be at least 0.000001 (1 µs)"
    )
    events = await api.client.get(f"/events?template_id={bad_id}", headers=api.a)
    assert EventType.TEMPLATE_ERROR in {e["type"] for e in events.json()["items"]}
    # The owner cannot switch it on again as it is.
    on = await api.client.patch(f"/templates/{bad_id}", json={"active": True}, headers=api.a)
    _refused(on, 422, "interval_seconds")

    # The admin (of merchant A) sees B's templates too, by merchant or all at once.
    listed = await api.client.get(
        f"/admin/templates?merchant_id={api.merchant_b}", headers=api.admin
    )
    assert [t["id"] for t in listed.json()["items"]] == [mine.json()["id"]]
    assert listed.json()["items"][0]["merchant_id"] == api.merchant_b
    everyone = await api.client.get("/admin/templates", headers=api.admin)
    assert {t["id"] for t in everyone.json()["items"]} == {mine.json()["id"], bad_id}
    # Pausing never evaluates the schedule (so a broken one stops as well).
    await _set_active(api, bad_id, active=True)
    paused = await api.client.post(f"/admin/templates/{bad_id}/pause", headers=api.admin)
    assert paused.status_code == 200 and paused.json()["active"] is False
    assert paused.json()["last_error"] == "switched off by an administrator"
    paused_b = await api.client.post(
        f"/admin/templates/{mine.json()['id']}/pause", headers=api.admin
    )
    assert paused_b.json()["active"] is False  # another merchant's: no 404 for the admin
    gone = await api.client.delete(f"/admin/templates/{bad_id}", headers=api.admin)
    assert gone.status_code == 204
    assert (await api.client.get(f"/templates/{bad_id}", headers=api.a)).status_code == 404
    # A tenant key reaches none of it.
    assert (await api.client.get("/admin/templates", headers=api.b)).status_code == 403
    missing = await api.client.post("/admin/templates/nope/pause", headers=api.admin)
    assert missing.status_code == 404


async def _set_active(api: Api, template_id: str, *, active: bool) -> None:
    async with api.runtime.db.transaction() as conn:
        stmt = update(schema.templates).where(schema.templates.c.id == template_id)
        await conn.execute(stmt.values(active=active))


# --- S36: quotas and pages -------------------------------------------------------------


@pytest.fixture
async def quota_api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    limits = {"max_templates_per_merchant": 5, "max_pending_jobs_per_merchant": 100}
    async with serve_api(database_url, tmp_path, scheduler=limits) as holder:
        yield holder


async def test_api_s36_template_quota_then_429_and_other_merchants_unaffected(
    quota_api: Api,
) -> None:
    api = quota_api
    for n in range(5):
        body = _template(f"t{n}", interval_seconds=1)
        assert (await api.client.post("/templates", json=body, headers=api.a)).status_code == 201
    before = (await _rows(api, "templates"), await _rows(api, "events"))
    over = await api.client.post("/templates", json=_template("t5"), headers=api.a)
    _refused(over, 429, "templates")
    assert over.json()["error"]["type"] == "quota_exceeded"
    via_jobs = await api.client.post(
        "/jobs", json={"task_type": "echo", "cron": "@daily"}, headers=api.a
    )
    _refused(via_jobs, 429, "templates")
    assert (await _rows(api, "templates"), await _rows(api, "events")) == before
    assert (
        await api.client.post("/templates", json=_template("b"), headers=api.b)
    ).status_code == 201


async def test_api_s36_flooding_merchant_does_not_slow_another(quota_api: Api) -> None:
    """A at its template quota with the shortest interval, rounds running; B's 100
    POST /jobs answer quickly, and A's 101st waiting job is refused."""
    api = quota_api
    for n in range(5):
        body = _template(f"flood{n}", interval_seconds=1)
        assert (await api.client.post("/templates", json=body, headers=api.a)).status_code == 201
    latencies = []
    for n in range(100):
        api.clock.advance(1)
        if n % 10 == 0:
            await api.runtime.recurrence.run_once()  # A's instances pile up (nothing runs)
        started = time.perf_counter()
        response = await api.client.post("/jobs", json={"task_type": "echo"}, headers=api.b)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 201, response.text
    latencies.sort()
    assert latencies[98] < 1.0  # p99
    for _ in range(100):
        response = await api.client.post(
            "/jobs", json={"task_type": "echo", "delay_seconds": 3600}, headers=api.a
        )
        if response.status_code != 201:
            break
    _refused(response, 429, "jobs")
    async with api.runtime.db.read() as conn:
        waiting = await conn.execute(
            select(func.count())
            .select_from(schema.jobs)
            .where(
                schema.jobs.c.merchant_id == DEFAULT_MERCHANT_ID,
                schema.jobs.c.status.in_(["scheduled", "queued"]),
            )
        )
    assert waiting.scalar_one() == 100


async def test_api_s36_templates_are_listed_page_by_page(api: Api) -> None:
    ids = []
    for n in range(7):
        created = await api.client.post("/templates", json=_template(f"p{n}"), headers=api.a)
        ids.append(created.json()["id"])
        api.clock.advance(0.001 if n % 2 else 0)  # ties on created_at, broken by id
    await api.client.post("/templates", json=_template("theirs"), headers=api.b)
    seen, cursor = [], None
    while True:
        query = f"/templates?limit=3{f'&cursor={cursor}' if cursor else ''}"
        page = (await api.client.get(query, headers=api.a)).json()
        assert len(page["items"]) <= 3
        seen += [t["id"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    default = (await api.client.get("/templates", headers=api.a)).json()
    assert len(default["items"]) == 7 and default["next_cursor"] is None
    for bad, field in (
        ("limit=0", "query.limit"),
        ("limit=501", "query.limit"),
        ("cursor=not-a-cursor", "cursor"),
    ):
        response = await api.client.get(f"/templates?{bad}", headers=api.a)
        _refused(response, 422, field)


async def test_api_s36_library_pending_quota(tmp_path: Path) -> None:
    """The same quotas hold for the library's schedule() and schedule_many()."""
    from taskmill.core.errors import QuotaExceeded
    from taskmill.services.scheduling import ScheduleRequest

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    limits = {"max_pending_jobs_per_merchant": 3, "max_templates_per_merchant": 1}
    async with serve_api(url, tmp_path, scheduler=limits) as api:
        await api.app.schedule("echo", name="one", interval=60)
        with pytest.raises(QuotaExceeded):
            await api.app.schedule("echo", name="two", interval=60)
        runtime = api.runtime
        with pytest.raises(QuotaExceeded):
            await runtime.scheduler.schedule_many([ScheduleRequest("echo")] * 4)
        await runtime.scheduler.schedule_many([ScheduleRequest("echo")] * 3)
        with pytest.raises(QuotaExceeded):
            await api.app.schedule("echo")
        with pytest.raises(ValidationError):
            await api.app.schedule("echo", interval=0.5)


EDGE_SCHEDULES: list[Any] = [
    {"interval_seconds": 1, "start_at": "9999-12-31T23:59:59Z"},
    {"interval_seconds": 366 * 86400, "start_at": "9999-12-31T00:00:00Z"},
    {"cron": "0 0 30 2 *"},  # 30 February: never fires
    {"cron": "0 0 * * *", "timezone": "America"},  # a tzdata directory
    {"cron": "0 0 * * *", "start_at": "9999-12-31T00:00:00Z"},
]


@pytest.mark.parametrize(
    "schedule", EDGE_SCHEDULES, ids=["start-9999", "long-9999", "feb-30", "tz-dir", "cron-9999"]
)
async def test_api_s35_edge_schedules_are_refused_or_isolated(
    api: Api, schedule: dict[str, Any]
) -> None:
    """S35: each is refused with 422 or stored, and then the services keep running and
    another merchant's template keeps firing on time."""
    mine = await api.client.post("/templates", json=_template("b-ticks"), headers=api.b)
    edge = await api.client.post("/templates", json=_template("edge", **schedule), headers=api.a)
    assert edge.status_code in (201, 422), edge.text
    assert "Traceback" not in edge.text
    for _ in range(3):
        await run_until_idle(api.app)
        api.clock.advance(60)
    fired = await api.client.get(f"/jobs?template_id={mine.json()['id']}&limit=500", headers=api.b)
    assert len(fired.json()["items"]) == 3
    assert (await api.client.get("/templates", headers=api.a)).status_code == 200
