"""One tenant cannot stop or flood the recurrence manager (RELIABILITY.md S35, S36).

Bad schedules are written straight into the database, as a row stored before the
validation existed (or by a bug) would be: the manager must switch that one template
off and keep firing every other merchant's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from taskmill import TaskContext, Taskmill
from taskmill.core.errors import ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.templates import Template
from taskmill.services.recurrence_manager import RecurrenceConfig, RecurrenceManager
from taskmill.store import tenants
from taskmill.store.events import EventFilter, list_events
from taskmill.store.jobs import JobFilter
from taskmill.store.schema import templates
from taskmill.store.templates import StoredTemplate
from taskmill.testing import FrozenClock

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
async def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def app(database_url: str, clock: FrozenClock) -> AsyncIterator[Taskmill]:
    application = Taskmill(database_url, clock=clock)

    @application.task("tick", max_retries=0)
    async def tick(ctx: TaskContext, payload: object) -> None:
        return None

    yield application
    await application.stop()


async def _merchant(app: Taskmill, name: str) -> str:
    runtime = await app.open()
    return (await tenants.create_merchant(runtime.db, name, now=START)).id


async def _template(app: Taskmill, merchant_id: str, name: str, **kw: Any) -> Template:
    runtime = await app.open()
    template = await app.schedule("tick", name=name, **kw)
    assert isinstance(template, Template)
    async with runtime.db.transaction() as conn:
        await conn.execute(
            update(templates).where(templates.c.id == template.id).values(merchant_id=merchant_id)
        )
    return template


async def _corrupt(app: Taskmill, template_id: str, **values: Any) -> None:
    """Store what validation would refuse, bypassing it."""
    runtime = await app.open()
    async with runtime.db.transaction() as conn:
        await conn.execute(update(templates).where(templates.c.id == template_id).values(**values))


async def _instances(app: Taskmill, template_id: str) -> int:
    return len(await app.list(JobFilter(template_id=template_id, limit=10_000)))


# Every way a stored schedule can be beyond evaluation: a zero step (interval 1e-9 and
# 5e-324 round to timedelta(0)), NaN, a cron no parser accepts, a zone that is a tzdata
# directory or does not exist, and a policy no version of taskmill wrote.
BAD_SCHEDULES: list[dict[str, Any]] = [
    {"interval_seconds": 1e-9},
    {"interval_seconds": 5e-324},
    {"interval_seconds": float("nan")},
    {"schedule_type": "cron", "cron_expression": "not a cron"},
    {"schedule_type": "cron", "cron_expression": "0 0 * * *", "timezone": "America"},
    {"schedule_type": "cron", "cron_expression": "0 0 * * *", "timezone": "No/Such_Zone"},
    {"misfire_policy": "bogus"},
]


@pytest.mark.parametrize("bad", BAD_SCHEDULES, ids=lambda b: "-".join(map(str, b.values())))
async def test_recurrence_isolation_bad_template_is_switched_off_others_keep_firing(
    app: Taskmill,
    clock: FrozenClock,
    bad: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    merchant_a = await _merchant(app, "A")
    broken = await _template(app, merchant_a, "broken", interval=60)
    good = await _template(app, DEFAULT_MERCHANT_ID, "good", interval=60)
    await _corrupt(app, broken.id, **bad)
    runtime = await app.open()
    manager = RecurrenceManager(runtime.db, clock, RecurrenceConfig())
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            await manager.run_once()  # raises nothing: one template cannot stop it
            clock.advance(60)
    assert await _instances(app, good.id) == 3  # B's template fired every round
    assert await _instances(app, broken.id) == 0
    async with runtime.db.read() as conn:
        stored = (await conn.execute(select(templates).where(templates.c.id == broken.id))).one()
    assert not stored.active and stored.next_run_at is None
    assert stored.last_error.startswith("its schedule cannot be evaluated") or (
        stored.last_error.startswith("the stored template cannot be read")
    )
    assert "Traceback" not in stored.last_error and "division" not in stored.last_error
    assert broken.id in caplog.text and merchant_a in caplog.text  # the log names it
    events = await list_events(
        runtime.db, EventFilter(template_id=broken.id, types=[EventType.TEMPLATE_ERROR])
    )
    assert len(events) == 1  # switched off once, not failing every round
    assert events[0].merchant_id == merchant_a
    assert events[0].data["reason"] == stored.last_error


async def test_recurrence_isolation_owner_fixes_and_switches_it_on_again(
    app: Taskmill, clock: FrozenClock
) -> None:
    from taskmill.services.templates import TemplateUpdate

    template = await _template(app, DEFAULT_MERCHANT_ID, "t", interval=60)
    await _corrupt(app, template.id, interval_seconds=1e-9)
    runtime = await app.open()
    await RecurrenceManager(runtime.db, clock, RecurrenceConfig()).run_once()
    with pytest.raises(ValidationError) as refused:  # still too short: not switched on
        await app.update_template(template.id, TemplateUpdate(active=True))
    assert refused.value.field == "interval_seconds"
    fixed = await app.update_template(template.id, TemplateUpdate(interval_seconds=60, active=True))
    assert isinstance(fixed, StoredTemplate)
    assert fixed.active and fixed.last_error is None and fixed.next_run_at is not None


@pytest.mark.parametrize("interval", [1e-9, 5e-324, 0.5, 0.999])
async def test_recurrence_isolation_library_refuses_an_interval_below_the_minimum(
    app: Taskmill, interval: float
) -> None:
    with pytest.raises(ValidationError) as refused:
        await app.schedule("tick", interval=interval)
    assert refused.value.field == "interval_seconds" and "at least 1" in refused.value.reason
    assert await app.templates() == []
    assert isinstance(await app.schedule("tick", interval=1), Template)


async def test_recurrence_isolation_merchants_take_turns_in_a_round(
    app: Taskmill, clock: FrozenClock
) -> None:
    """S36: A has 30 due templates, B one; a round of 5 fires B's too (not A's first 5)."""
    merchant_a = await _merchant(app, "A")
    for n in range(30):
        await _template(app, merchant_a, f"a{n}", interval=60)
    clock.advance(1)  # B's template is due later than all of A's
    theirs = await _template(app, DEFAULT_MERCHANT_ID, "b", interval=60)
    clock.advance(1)
    runtime = await app.open()
    manager = RecurrenceManager(runtime.db, clock, RecurrenceConfig(batch_size=5))
    assert await manager.run_once() == 5
    assert await _instances(app, theirs.id) == 1


async def test_recurrence_isolation_pending_quota_skips_ticks(
    app: Taskmill, clock: FrozenClock
) -> None:
    """S36: a merchant at its pending-jobs quota gets ticks skipped, not instances."""
    template = await _template(app, DEFAULT_MERCHANT_ID, "t", interval=60)
    runtime = await app.open()
    config = RecurrenceConfig(max_pending_per_merchant=2)
    manager = RecurrenceManager(runtime.db, clock, config)
    for _ in range(4):
        await manager.run_once()  # nothing runs the jobs: they stay scheduled/queued
        clock.advance(60)
    assert await _instances(app, template.id) == 2
    skipped = await list_events(
        runtime.db, EventFilter(template_id=template.id, types=[EventType.TEMPLATE_TICK_SKIPPED])
    )
    assert len(skipped) == 2 and "quota" in skipped[0].data["reason"]
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at == clock.now()
