"""The recurrence manager's lookahead (docs/adr/0015-create-ahead-lookahead.md): ticks
made ahead as ``scheduled`` jobs, on both databases, with a frozen clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.core.templates import OverlapPolicy, Template
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.recurrence_manager import RecurrenceConfig, RecurrenceManager
from taskmill.services.templates import TemplateUpdate
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.testing import FrozenClock, run_until_idle

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
LOOKAHEAD = 2.0


@pytest.fixture
async def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def app(database_url: str, clock: FrozenClock) -> AsyncIterator[Taskmill]:
    application = Taskmill(database_url, clock=clock)
    scheduler = application.settings.scheduler.model_copy(update={"lookahead_seconds": LOOKAHEAD})
    application.settings = application.settings.model_copy(update={"scheduler": scheduler})

    @application.task("tick", max_retries=0)
    async def tick(ctx: TaskContext, payload: object) -> None:
        return None

    yield application
    await application.stop()


async def _every_second(app: Taskmill, **kwargs: object) -> Template:
    template = await app.schedule("tick", cron="* * * * * *", **kwargs)  # type: ignore[arg-type]
    assert isinstance(template, Template)
    return template


async def _instances(app: Taskmill, template_id: str) -> list[Job]:
    jobs = await app.list(JobFilter(template_id=template_id, limit=10_000))
    return sorted(jobs, key=lambda j: j.run_at)


def _live(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status is not JobStatus.CANCELLED]


async def test_lookahead_integration_ticks_wait_scheduled_for_their_time(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="ahead")
    await run_until_idle(app)
    made = await _instances(app, template.id)
    # The ticks of the next two seconds exist, not yet queued: run_at is the tick.
    assert [j.scheduled_for for j in made] == [START + SECOND, START + 2 * SECOND]
    assert all(j.status is JobStatus.SCHEDULED and j.run_at == j.scheduled_for for j in made)
    clock.advance(1)
    await run_until_idle(app)
    made = await _instances(app, template.id)
    assert [j.scheduled_for for j in made] == [START + k * SECOND for k in (1, 2, 3)]
    assert [j.status for j in made] == [
        JobStatus.SUCCEEDED,
        JobStatus.SCHEDULED,
        JobStatus.SCHEDULED,
    ]
    current = await app.get(template.id)
    assert isinstance(current, Template) and current.next_run_at == START + 4 * SECOND


async def test_lookahead_integration_replicas_make_one_instance_per_tick(
    app: Taskmill, clock: FrozenClock, database_url: str
) -> None:
    template = await _every_second(app, name="replicated")
    databases = [Database.from_url(database_url) for _ in range(4)]
    config = RecurrenceConfig(lookahead_seconds=LOOKAHEAD)
    managers = [RecurrenceManager(store_for(db), clock, config) for db in databases]
    try:
        for _ in range(20):
            clock.advance(1)
            await asyncio.gather(*(m.run_once() for m in managers))
    finally:
        for db in databases:
            await db.close()
    ticks = Counter(j.scheduled_for for j in await _instances(app, template.id))
    assert set(ticks.values()) == {1}
    assert sorted(t for t in ticks if t is not None) == [START + k * SECOND for k in range(1, 23)]


async def test_lookahead_integration_switching_off_withdraws_ahead_and_on_makes_them_again(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="paused")
    await run_until_idle(app)
    ahead = await _instances(app, template.id)
    await app.update_template(template.id, TemplateUpdate(active=False))
    withdrawn = await app.list(JobFilter(statuses=[JobStatus.CANCELLED], limit=100))
    assert sorted(j.id for j in withdrawn) == sorted(j.id for j in ahead)
    # The tick is released (scheduled_for NULL), its run_at still says which it was.
    assert all(j.scheduled_for is None and j.template_id == template.id for j in withdrawn)
    assert {j.cancel_reason for j in withdrawn} == {"its template was switched off"}
    for job in withdrawn:
        kinds = [e.type for e in await app.events(job.id)]
        assert kinds[-1] == EventType.JOB_CANCELLED
    # Switched on again before those ticks: each is made again, once.
    await app.update_template(template.id, TemplateUpdate(active=True))
    await run_until_idle(app)
    live = _live(await _instances(app, template.id))
    assert [j.scheduled_for for j in live] == [START + SECOND, START + 2 * SECOND]
    assert all(j.status is JobStatus.SCHEDULED for j in live)


async def test_lookahead_integration_editing_replaces_ahead_instances(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="edited", priority=1)
    await run_until_idle(app)
    old = await _instances(app, template.id)
    await app.update_template(template.id, TemplateUpdate(priority=7, payload={"v": 2}))
    cancelled = [await app.get(j.id) for j in old]
    assert all(isinstance(j, Job) and j.status is JobStatus.CANCELLED for j in cancelled)
    assert {j.cancel_reason for j in cancelled if isinstance(j, Job)} == {
        "its template was changed"
    }
    await run_until_idle(app)
    live = _live(await _instances(app, template.id))
    assert [j.scheduled_for for j in live] == [START + SECOND, START + 2 * SECOND]
    assert {(j.priority, str(j.payload)) for j in live} == {(7, "{'v': 2}")}


async def test_lookahead_integration_editing_the_schedule_replaces_ahead_instances(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="rescheduled")
    await run_until_idle(app)
    await app.update_template(template.id, TemplateUpdate(cron_expression="*/2 * * * * *"))
    await run_until_idle(app)
    live = _live(await _instances(app, template.id))
    # START + 2 s was a tick of both schedules: it exists once, made from the new one.
    assert [j.scheduled_for for j in live] == [START + 2 * SECOND]


async def test_lookahead_integration_deleting_cancels_ahead_instances(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="deleted")
    await run_until_idle(app)
    ahead = await _instances(app, template.id)
    assert len(ahead) == 2
    runtime = await app.open()
    await runtime.store.delete_template(ALL_MERCHANTS, template.id, actor="test", now=clock.now())
    after = [await app.get(j.id) for j in ahead]
    assert all(isinstance(j, Job) and j.status is JobStatus.CANCELLED for j in after)
    assert {j.cancel_reason for j in after if isinstance(j, Job)} == {"its template was deleted"}


async def test_lookahead_integration_overlap_skip_is_made_at_its_tick(
    app: Taskmill, clock: FrozenClock
) -> None:
    """``skip`` judges "previous instance unfinished" at the tick: never made ahead."""
    template = await _every_second(app, name="skipper", overlap_policy=OverlapPolicy.SKIP)
    await run_until_idle(app)
    assert await _instances(app, template.id) == []
    runtime = await app.open()
    assert await runtime.recurrence.next_wake_at() == START + SECOND
    clock.advance(1)
    await run_until_idle(app)
    made = await _instances(app, template.id)
    assert [(j.scheduled_for, j.status) for j in made] == [(START + SECOND, JobStatus.SUCCEEDED)]


async def test_lookahead_integration_manager_wakes_a_lookahead_before_the_tick(
    app: Taskmill, clock: FrozenClock
) -> None:
    template = await _every_second(app, name="woken")
    runtime = await app.open()
    assert template.next_run_at == START + SECOND
    assert await runtime.recurrence.next_wake_at() == START + SECOND - LOOKAHEAD * SECOND


async def test_lookahead_integration_manager_wakes_for_a_later_ahead_template_behind_a_skip_one(
    app: Taskmill, clock: FrozenClock
) -> None:
    await _every_second(app, name="skipper", overlap_policy=OverlapPolicy.SKIP)  # START + 1
    await app.schedule("tick", cron="*/2 * * * * *", name="even")  # START + 2, made ahead
    runtime = await app.open()
    assert await runtime.recurrence.next_wake_at() == START + 2 * SECOND - LOOKAHEAD * SECOND
