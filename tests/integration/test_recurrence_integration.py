"""Templates through the recurrence manager on a real SQLite file, with a frozen clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from taskmill import TaskContext, Taskmill
from taskmill.core.errors import ValidationError
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, Job, JobFilter, JobStatus
from taskmill.core.templates import MisfirePolicy, OverlapPolicy, Template
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.recurrence_manager import RecurrenceConfig, RecurrenceManager
from taskmill.services.templates import TemplateUpdate
from taskmill.store import tenants
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.events import list_events
from taskmill.store.schema import templates
from taskmill.store.templates import StoredTemplate, get_template
from taskmill.testing import FrozenClock, run_until_idle

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


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


async def _template(app: Taskmill, **kwargs: object) -> Template:
    template = await app.schedule("tick", **kwargs)  # type: ignore[arg-type]
    assert isinstance(template, Template)
    return template


async def _instances(app: Taskmill, template: Template) -> list[Job]:
    return await app.list(JobFilter(template_id=template.id, limit=10_000))


async def test_recurrence_integration_replicas_create_one_instance_per_tick(
    app: Taskmill, clock: FrozenClock, database_url: str
) -> None:
    template = await _template(app, cron="* * * * * *", name="every-second")
    databases = [Database.from_url(database_url) for _ in range(4)]
    managers = [RecurrenceManager(store_for(db), clock, RecurrenceConfig()) for db in databases]
    try:
        for _ in range(30):
            clock.advance(1)
            await asyncio.gather(*(m.run_once() for m in managers))
    finally:
        for db in databases:
            await db.close()
    ticks = [j.scheduled_for for j in await _instances(app, template)]
    assert len(ticks) == 30 and len(set(ticks)) == 30
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at == clock.now() + timedelta(
        seconds=1
    )


async def test_recurrence_integration_replicas_take_disjoint_templates(
    app: Taskmill, clock: FrozenClock, database_url: str
) -> None:
    """A template another manager is firing (its row locked) is skipped, not waited for:
    replicas divide the due templates between them (on SQLite one writer does all)."""
    busy = await _template(app, cron="* * * * * *", name="busy")
    free = await _template(app, cron="* * * * * *", name="free")
    clock.advance(1)
    holder, other = Database.from_url(database_url), Database.from_url(database_url)
    manager = RecurrenceManager(store_for(other), clock, RecurrenceConfig())
    try:
        if not holder.dialect.supports_skip_locked:
            assert await manager.run_once() == 2
            return
        async with holder.transaction() as conn:
            await conn.execute(
                select(templates.c.id).where(templates.c.id == busy.id).with_for_update()
            )
            handled = await asyncio.wait_for(manager.run_once(), timeout=10)
    finally:
        await holder.close()
        await other.close()
    assert handled == 1
    assert len(await _instances(app, free)) == 1 and await _instances(app, busy) == []


async def test_recurrence_integration_backward_clock_jump_adds_nothing(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _template(app, interval=60, name="minutely")
    for _ in range(5):
        await run_until_idle(app)
        clock.advance(60)
    before = len(await _instances(app, template))
    clock.advance(-3600)
    await run_until_idle(app)
    assert len(await _instances(app, template)) == before
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at is not None
    assert current.next_run_at > START  # never moved backwards


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(MisfirePolicy.SKIP, 0), (MisfirePolicy.RUN_ONCE, 1), (MisfirePolicy.CATCH_UP, 3)],
)
async def test_recurrence_integration_misfire_policy_after_downtime(
    database_url: str, policy: MisfirePolicy, expected: int
) -> None:
    clock = FrozenClock(START)
    app = Taskmill(database_url, clock=clock)
    # A tick more than 1 s late counts as missed (the default grace is 60 s).
    scheduler = app.settings.scheduler.model_copy(
        update={"max_catchup": 3, "misfire_grace_seconds": 1.0}
    )
    app.settings = app.settings.model_copy(update={"scheduler": scheduler})

    @app.task("tick")
    async def tick(ctx: TaskContext, payload: object) -> None:
        return None

    try:
        template = await _template(app, cron="*/1 * * * *", misfire_policy=policy)
        clock.set(START + timedelta(minutes=10, seconds=30))  # down for 10 minutes
        await run_until_idle(app)
        instances = await _instances(app, template)
        assert len(instances) == expected
        current = await app.get(template.id)
        assert isinstance(current, Template) and current.next_run_at is not None
        assert current.next_run_at > clock.now()
        if policy is MisfirePolicy.RUN_ONCE:
            assert instances[0].scheduled_for == START + timedelta(minutes=10)
    finally:
        await app.stop()


async def test_recurrence_integration_dst_gap_fires_once_after_gap(database_url: str) -> None:
    clock = FrozenClock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    app = Taskmill(database_url, clock=clock)

    @app.task("tick")
    async def tick(ctx: TaskContext, payload: object) -> None:
        return None

    try:
        template = await _template(app, cron="30 2 * * *", timezone="Europe/Berlin")
        while clock.now() < datetime(2026, 3, 30, 12, 0, tzinfo=UTC):
            clock.advance(600)
            await run_until_idle(app)
        fired = [j.scheduled_for for j in await _instances(app, template)]
        assert fired == [
            datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST: the first instant after the gap
            datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
        ]
    finally:
        await app.stop()


async def test_recurrence_integration_overlap_skip(app: Taskmill, clock: FrozenClock) -> None:
    template = await _template(app, interval=60, overlap_policy=OverlapPolicy.SKIP)
    await app.runtime.recurrence.run_once()  # instance 1, left unfinished (nobody runs it)
    clock.advance(60)
    await app.runtime.recurrence.run_once()  # skipped: instance 1 is still scheduled
    assert len(await _instances(app, template)) == 1
    events = [e.type.value for e in await app.events() if e.template_id == template.id]
    assert "template.tick_skipped" in events
    await run_until_idle(app)  # instance 1 runs
    clock.advance(60)
    await run_until_idle(app)
    assert len(await _instances(app, template)) == 2


async def test_recurrence_integration_overlap_queue_runs_in_order(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _template(app, interval=60, overlap_policy=OverlapPolicy.QUEUE)
    for _ in range(3):
        await app.runtime.recurrence.run_once()
        clock.advance(60)
    instances = await _instances(app, template)
    assert len(instances) == 3
    queued = await app.runtime.populator.run_once()
    assert queued == 1  # one at a time
    await run_until_idle(app)
    done = await _instances(app, template)
    assert all(j.status is JobStatus.SUCCEEDED for j in done[:3])
    started = sorted(done[:3], key=lambda j: j.started_at or START)
    assert [j.scheduled_for for j in started] == sorted(j.scheduled_for or START for j in done[:3])


async def test_recurrence_integration_disable_enable_and_update(
    app: Taskmill, clock: FrozenClock, db: Database
) -> None:
    template = await _template(app, cron="0 * * * *", name="hourly")
    assert template.next_run_at == datetime(2026, 5, 1, 13, 0, tzinfo=UTC)
    off = await app.cancel(template.id)
    assert isinstance(off, Template) and not off.active and off.next_run_at is None
    clock.advance(7200)
    await run_until_idle(app)
    assert await _instances(app, template) == []
    on = await app.update_template(template.id, TemplateUpdate(active=True))
    assert on.next_run_at == datetime(2026, 5, 1, 15, 0, tzinfo=UTC)
    moved = await app.update_template(
        template.id, TemplateUpdate(cron_expression="30 9 * * *", timezone="Europe/Berlin")
    )
    assert moved.next_run_at == datetime(2026, 5, 2, 7, 30, tzinfo=UTC)
    with pytest.raises(ValidationError) as err:
        await app.update_template(template.id, TemplateUpdate(cron_expression="99 * * * *"))
    assert err.value.field == "cron"
    unchanged = await get_template(db, template.id, ALL_MERCHANTS)
    assert unchanged.cron_expression == "30 9 * * *"


async def test_recurrence_integration_preview_flags_dst(app: Taskmill, clock: FrozenClock) -> None:
    clock.set(datetime(2026, 10, 23, 12, 0, tzinfo=UTC))
    template = await _template(app, cron="30 2 * * *", timezone="Europe/Berlin")
    fires = await app.preview(template.id, 4)
    assert [f.at for f in fires] == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # first of the two 02:30s
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    assert [f.dst_affected for f in fires] == [False, True, False, False]
    assert fires[1].local.isoformat() == "2026-10-25T02:30:00+02:00"


# --- RELIABILITY.md S35 and S36: one tenant cannot stop or flood the manager ----------
# Bad schedules are written straight into the database, as a row stored before the
# validation existed (or by a bug) would be: the manager must switch that one template
# off and keep firing every other merchant's.


async def _merchant(app: Taskmill, name: str) -> str:
    runtime = await app.open()
    return (await tenants.create_merchant(runtime.db, name, now=START)).id


async def _merchant_template(app: Taskmill, merchant_id: str, name: str, **kw: Any) -> Template:
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


async def _count_instances(app: Taskmill, template_id: str) -> int:
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
    broken = await _merchant_template(app, merchant_a, "broken", interval=60)
    good = await _merchant_template(app, DEFAULT_MERCHANT_ID, "good", interval=60)
    await _corrupt(app, broken.id, **bad)
    runtime = await app.open()
    manager = RecurrenceManager(runtime.store, clock, RecurrenceConfig())
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            await manager.run_once()  # raises nothing: one template cannot stop it
            clock.advance(60)
    assert await _count_instances(app, good.id) == 3  # B's template fired every round
    assert await _count_instances(app, broken.id) == 0
    async with runtime.db.read() as conn:
        stored = (await conn.execute(select(templates).where(templates.c.id == broken.id))).one()
    assert not stored.active and stored.next_run_at is None
    assert stored.last_error.startswith("its schedule cannot be evaluated") or (
        stored.last_error.startswith("the stored template cannot be read")
    )
    assert "Traceback" not in stored.last_error and "division" not in stored.last_error
    assert broken.id in caplog.text and merchant_a in caplog.text  # the log names it
    events = await list_events(
        runtime.db,
        ALL_MERCHANTS,
        EventFilter(template_id=broken.id, types=[EventType.TEMPLATE_ERROR]),
    )
    assert len(events) == 1  # switched off once, not failing every round
    assert events[0].merchant_id == merchant_a
    assert events[0].data["reason"] == stored.last_error


async def test_recurrence_isolation_owner_fixes_and_switches_it_on_again(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _merchant_template(app, DEFAULT_MERCHANT_ID, "t", interval=60)
    await _corrupt(app, template.id, interval_seconds=1e-9)
    runtime = await app.open()
    await RecurrenceManager(runtime.store, clock, RecurrenceConfig()).run_once()
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
        await _merchant_template(app, merchant_a, f"a{n}", interval=60)
    clock.advance(1)  # B's template is due later than all of A's
    theirs = await _merchant_template(app, DEFAULT_MERCHANT_ID, "b", interval=60)
    clock.advance(1)
    runtime = await app.open()
    manager = RecurrenceManager(runtime.store, clock, RecurrenceConfig(batch_size=5))
    assert await manager.run_once() == 5
    assert await _count_instances(app, theirs.id) == 1


async def test_recurrence_isolation_pending_quota_skips_ticks(
    app: Taskmill, clock: FrozenClock
) -> None:
    """S36: a merchant at its pending-jobs quota gets ticks skipped, not instances."""
    template = await _merchant_template(app, DEFAULT_MERCHANT_ID, "t", interval=60)
    runtime = await app.open()
    config = RecurrenceConfig(max_pending_per_merchant=2)
    manager = RecurrenceManager(runtime.store, clock, config)
    for _ in range(4):
        await manager.run_once()  # nothing runs the jobs: they stay scheduled/queued
        clock.advance(60)
    assert await _count_instances(app, template.id) == 2
    skipped = await list_events(
        runtime.db,
        ALL_MERCHANTS,
        EventFilter(template_id=template.id, types=[EventType.TEMPLATE_TICK_SKIPPED]),
    )
    assert len(skipped) == 2 and "quota" in skipped[0].data["reason"]
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at == clock.now()
