"""Schedules declared in code (``@app.periodic``, ``app.schedule(cron=|interval=)``) are
reconciled at every start: restarts leave one template per declaration, a changed
definition updates it, a declaration removed switches its template off (never one made
through the API), and processes starting together create each template once."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ConfigError, ValidationError
from taskmill.core.events import EventType
from taskmill.core.templates import Template
from taskmill.store.schema import events, jobs, templates
from taskmill.store.templates import NO_LONGER_DECLARED, StoredTemplate

ROOT = Path(__file__).resolve().parents[2]


def _app(url: str, *declarations: dict[str, Any]) -> Taskmill:
    """A fresh app object (a process starting again) declaring ``declarations``."""
    app = Taskmill(settings=load_settings("test", None, database={"url": url}))

    @app.task("report")
    async def report(ctx: TaskContext, payload: Any) -> None:
        return None

    for declared in declarations:
        app.periodic(**declared)(report)
    return app


async def _templates(app: Taskmill) -> list[Template]:
    return await app.templates()


async def _start(app: Taskmill) -> list[Template]:
    """Open (reconcile) and close, as a process that starts and stops."""
    try:
        await app.open()
        return await _templates(app)
    finally:
        await app.stop()


DAILY = {"cron": "0 0 9 * * *", "timezone": "Europe/Berlin", "name": "daily-report"}


async def test_restarts_keep_one_template_per_declaration(database_url: str) -> None:
    hourly = {"interval": 3600, "payload": {"kind": "hourly"}}  # no name: a derived one
    first = await _start(_app(database_url, DAILY, hourly))
    for _ in range(2):
        again = await _start(_app(database_url, DAILY, hourly))
        assert [(t.id, t.next_run_at) for t in again] == [(t.id, t.next_run_at) for t in first]
    assert sorted(t.name for t in first)[0] == "daily-report"
    assert all(t.active for t in first)
    app = _app(database_url)
    created = [e for e in await app.events() if e.type is EventType.TEMPLATE_CREATED]
    updated = [e for e in await app.events() if e.type is EventType.TEMPLATE_UPDATED]
    await app.stop()
    assert len(created) == 2 and updated == []


async def test_a_changed_definition_updates_its_template(database_url: str) -> None:
    [before] = await _start(_app(database_url, DAILY))
    [after] = await _start(_app(database_url, DAILY | {"cron": "0 30 9 * * *"}))
    assert after.id == before.id and after.cron_expression == "0 30 9 * * *"
    assert after.next_run_at is not None and after.next_run_at.minute in (30,)
    app = _app(database_url)
    logged = await app.events()
    await app.stop()
    [change] = [e for e in logged if e.type is EventType.TEMPLATE_UPDATED]
    assert change.template_id == before.id and change.actor == "library"
    assert change.data["cron_expression"] == "0 30 9 * * *"


async def test_a_declaration_removed_is_switched_off_and_back_on(database_url: str) -> None:
    weekly = {"cron": "0 0 8 * * 1", "name": "weekly"}
    await _start(_app(database_url, DAILY, weekly))
    made_by_hand = _app(database_url)
    # Made through the API or by hand (not declared): never switched off by a start.
    by_hand = await made_by_hand.runtime.jobs.schedule(_request("by-hand"))
    await made_by_hand.stop()
    kept = {t.name: t for t in await _start(_app(database_url, DAILY))}
    assert kept["daily-report"].active and kept[by_hand.item.name].active  # type: ignore[union-attr]
    assert not kept["weekly"].active and _last_error(kept["weekly"]) == NO_LONGER_DECLARED
    back = {t.name: t for t in await _start(_app(database_url, DAILY, weekly))}
    assert back["weekly"].active and _last_error(back["weekly"]) is None


def _last_error(template: Template) -> str | None:
    assert isinstance(template, StoredTemplate)
    return template.last_error


def _request(name: str) -> Any:
    from taskmill.services.scheduling import ScheduleRequest

    return ScheduleRequest(task="report", cron="0 0 7 * * *", name=name, actor="api_key:x")


async def test_library_schedule_with_a_cron_is_idempotent(database_url: str) -> None:
    for _ in range(3):
        app = _app(database_url)
        unnamed = await app.schedule("report", {"n": 1}, cron="*/5 * * * *")
        named = await app.schedule("report", {}, interval=60, name="every-minute")
        await app.stop()
    app = _app(database_url)
    found = await app.templates()
    await app.stop()
    assert sorted(t.id for t in found) == sorted([unnamed.id, named.id])


async def test_bad_declarations_are_refused(database_url: str) -> None:
    app = _app(database_url)
    with pytest.raises(ValidationError, match="cron"):
        app.periodic(cron="* * * * *", interval=60)
    with pytest.raises(ValidationError, match="cron"):
        app.periodic()

    async def not_a_task(ctx: TaskContext, payload: Any) -> None:
        return None

    app.periodic(interval=60)(not_a_task)
    with pytest.raises(ConfigError, match="not a task"):
        await app.open()
    await app.stop()
    twice = _app(database_url, DAILY, DAILY | {"cron": "0 0 10 * * *"})
    with pytest.raises(ValidationError, match="daily-report"):
        await twice.open()
    await twice.stop()
    bad_cron = _app(database_url, {"cron": "not a cron", "name": "broken"})
    with pytest.raises(ValidationError, match="cron"):
        await bad_cron.open()
    await bad_cron.stop()
    app = _app(database_url)
    assert await app.templates() == []  # nothing partial was stored
    await app.stop()


PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from taskmill import Taskmill
    from taskmill.config import load_settings

    app = Taskmill(settings=load_settings("test", None, database={"url": sys.argv[1]}))

    @app.periodic(cron="* * * * * *", name="every-second")
    @app.periodic(cron=sys.argv[2], name="daily-report")
    @app.task("report")
    async def report(ctx, payload):
        return None

    async def main():
        await app.start()
        await asyncio.sleep(float(sys.argv[3]))
        await app.stop()

    asyncio.run(main())
    """
)


async def _processes(url: str, cron: str, seconds: float, count: int) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROCESS, url, cron, str(seconds), cwd=ROOT
        )
        for _ in range(count)
    ]
    codes = await asyncio.gather(*(p.wait() for p in procs))
    assert codes == [0] * count


async def test_processes_starting_together_create_each_template_once(postgres_url: str) -> None:
    """Four processes of one app start at once on PostgreSQL, then three with a changed
    definition: one template per declaration, one creation and one change recorded,
    and one job per tick of the per-second schedule they all run."""
    await _processes(postgres_url, "0 0 9 * * *", 2.0, 4)
    await _processes(postgres_url, "0 0 10 * * *", 0.2, 3)
    app = Taskmill(settings=load_settings("test", None, database={"url": postgres_url}))
    try:
        db = (await app.open()).db
        async with db.read() as conn:
            names = (await conn.execute(select(templates.c.name))).scalars().all()
            kinds = (
                await conn.execute(select(events.c.type, func.count()).group_by(events.c.type))
            ).all()
            ticks = (
                await conn.execute(
                    select(jobs.c.template_id, jobs.c.scheduled_for, func.count())
                    .group_by(jobs.c.template_id, jobs.c.scheduled_for)
                    .having(func.count() > 1)
                )
            ).all()
            instances = (await conn.execute(select(func.count()).select_from(jobs))).scalar()
        [daily] = [t for t in await app.templates() if t.name == "daily-report"]
        changes = await app.events()
    finally:
        await app.stop()
    assert sorted(names) == ["daily-report", "every-second"]
    counted = {str(kind): int(n) for kind, n in kinds}
    assert counted["template.created"] == 2
    updates = [e for e in changes if e.type is EventType.TEMPLATE_UPDATED]
    assert [e.template_id for e in updates] == [daily.id]
    assert daily.cron_expression == "0 0 10 * * *"
    assert instances and instances >= 2 and ticks == []  # every tick once
