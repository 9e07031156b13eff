"""Templates: create, read, switch on/off, delete, and fire (one instance per tick)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.errors import Conflict, NotFound
from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, UNFINISHED_STATUSES, ScheduleType
from taskmill.core.templates import MisfirePolicy, OverlapPolicy, Template
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, created_event, job_row
from taskmill.store.notify import DUE, TEMPLATES, notify
from taskmill.store.schema import jobs, templates


@dataclass(frozen=True, slots=True)
class NewTemplate:
    """A template to create; the service has validated it and computed ``next_run_at``."""

    name: str
    task_type: str
    schedule_type: ScheduleType
    next_run_at: datetime | None
    payload: Any = None
    merchant_id: str = DEFAULT_MERCHANT_ID
    cron_expression: str | None = None
    interval_seconds: float | None = None
    timezone: str = "UTC"
    start_at: datetime | None = None
    end_at: datetime | None = None
    queue: str = "default"
    priority: int = 0
    active: bool = True
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    max_attempts: int = 1
    timeout_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def to_template(row: Row[Any]) -> Template:
    m = row._mapping
    return Template(
        id=m["id"],
        merchant_id=m["merchant_id"],
        name=m["name"],
        task_type=m["task_type"],
        queue=m["queue"],
        priority=m["priority"],
        payload=m["payload"],
        schedule_type=ScheduleType(m["schedule_type"]),
        cron_expression=m["cron_expression"],
        interval_seconds=m["interval_seconds"],
        timezone=m["timezone"],
        start_at=m["start_at"],
        end_at=m["end_at"],
        active=m["active"],
        next_run_at=m["next_run_at"],
        last_scheduled_for=m["last_scheduled_for"],
        misfire_policy=MisfirePolicy(m["misfire_policy"]),
        overlap_policy=OverlapPolicy(m["overlap_policy"]),
        max_attempts=m["max_attempts"],
        timeout_seconds=m["timeout_seconds"],
        created_at=m["created_at"],
    )


async def create_template(db: Database, new: NewTemplate, *, actor: str, now: datetime) -> Template:
    """Insert a template and its ``template.created`` event; a taken name is a ``Conflict``."""
    row = {
        "id": str(uuid.uuid4()),
        "merchant_id": new.merchant_id,
        "name": new.name,
        "task_type": new.task_type,
        "queue": new.queue,
        "priority": new.priority,
        "payload": new.payload,
        "schedule_type": new.schedule_type,
        "cron_expression": new.cron_expression,
        "interval_seconds": new.interval_seconds,
        "timezone": new.timezone,
        "start_at": new.start_at,
        "end_at": new.end_at,
        "active": new.active,
        "next_run_at": new.next_run_at,
        "last_scheduled_for": None,
        "misfire_policy": new.misfire_policy.value,
        "overlap_policy": new.overlap_policy.value,
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "created_at": now,
        "updated_at": now,
    }
    async with db.transaction() as conn:
        taken = await conn.execute(
            select(templates.c.id).where(
                templates.c.merchant_id == new.merchant_id, templates.c.name == new.name
            )
        )
        if taken.first() is not None:
            raise Conflict(f"name: a template named {new.name!r} already exists")
        await conn.execute(templates.insert().values(row))
        await _event(conn, row["id"], new.merchant_id, EventType.TEMPLATE_CREATED, actor, now, row)
        await notify(conn, db.dialect, TEMPLATES)
        return await _get(conn, row["id"], None)


async def _event(
    conn: AsyncConnection,
    template_id: str,
    merchant_id: str,
    kind: EventType,
    actor: str,
    now: datetime,
    data: dict[str, Any],
) -> None:
    await event_log.append(
        conn,
        [
            event_log.NewEvent(
                type=kind,
                merchant_id=merchant_id,
                actor=actor,
                occurred_at=now,
                template_id=template_id,
                data=data,
            )
        ],
    )


async def _get(conn: AsyncConnection, template_id: str, merchant_id: str | None) -> Template:
    stmt = select(templates).where(templates.c.id == template_id)
    if merchant_id is not None:
        stmt = stmt.where(templates.c.merchant_id == merchant_id)
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound("template", template_id)
    return to_template(row)


async def get_template(db: Database, template_id: str, merchant_id: str | None = None) -> Template:
    async with db.read() as conn:
        return await _get(conn, template_id, merchant_id)


async def list_templates(db: Database, merchant_id: str | None = None) -> list[Template]:
    stmt = select(templates).order_by(templates.c.created_at, templates.c.id)
    if merchant_id is not None:
        stmt = stmt.where(templates.c.merchant_id == merchant_id)
    async with db.read() as conn:
        return [to_template(row) for row in (await conn.execute(stmt)).all()]


UPDATABLE_COLUMNS = frozenset(
    {
        "name",
        "payload",
        "cron_expression",
        "interval_seconds",
        "timezone",
        "start_at",
        "end_at",
        "queue",
        "priority",
        "active",
        "next_run_at",
        "misfire_policy",
        "overlap_policy",
        "max_attempts",
        "timeout_seconds",
    }
)


async def update_template(
    db: Database,
    template_id: str,
    changes: dict[str, Any],
    *,
    actor: str,
    now: datetime,
    merchant_id: str | None = None,
) -> Template:
    """Apply validated ``changes`` and record them as one ``template.updated`` event."""
    unknown = set(changes) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")  # a programming error
    values = {k: v.value if isinstance(v, enum.Enum) else v for k, v in changes.items()}
    async with db.transaction() as conn:
        current = await _get(conn, template_id, merchant_id)
        if "name" in values and values["name"] != current.name:
            taken = await conn.execute(
                select(templates.c.id).where(
                    templates.c.merchant_id == current.merchant_id,
                    templates.c.name == values["name"],
                )
            )
            if taken.first() is not None:
                raise Conflict(f"name: a template named {values['name']!r} already exists")
        await conn.execute(
            update(templates).where(templates.c.id == template_id).values(**values, updated_at=now)
        )
        kind = EventType.TEMPLATE_UPDATED
        await _event(conn, template_id, current.merchant_id, kind, actor, now, values)
        await notify(conn, db.dialect, TEMPLATES)
        return await _get(conn, template_id, None)


async def delete_template(
    db: Database, template_id: str, *, actor: str, now: datetime, merchant_id: str | None = None
) -> None:
    """Delete a template; its past instances stay (their ``template_id`` becomes NULL)."""
    async with db.transaction() as conn:
        current = await _get(conn, template_id, merchant_id)
        await conn.execute(delete(templates).where(templates.c.id == template_id))
        await _event(
            conn, template_id, current.merchant_id, EventType.TEMPLATE_DELETED, actor, now, {}
        )


async def next_template_due_at(db: Database) -> datetime | None:
    stmt = select(templates.c.next_run_at).where(
        templates.c.active.is_(True), templates.c.next_run_at.is_not(None)
    )
    stmt = stmt.order_by(templates.c.next_run_at).limit(1)
    async with db.read() as conn:
        return (await conn.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class Fire:
    """Instances to create for one template, and where its schedule moves to."""

    template: Template
    fire_at: list[datetime]
    next_run_at: datetime | None


async def fire_due(
    db: Database,
    now: datetime,
    limit: int,
    planner: Callable[[Template], Fire | None],
    *,
    actor: str,
) -> tuple[int, int]:
    """Take up to ``limit`` active templates whose ``next_run_at`` has come, plan each
    with ``planner`` (``None``: leave it), create the planned instances and advance each
    ``next_run_at``, all in one transaction (one commit per round, not per template).
    Return how many templates were taken and how many instances were new.

    The due templates are locked with SKIP LOCKED, so recurrence managers running side by
    side fire disjoint templates instead of all doing every one (and queueing on each
    other's unique-index inserts). Should two still fire one tick, the unique
    ``(template_id, scheduled_for)`` makes the second insert a no-op, and the guarded
    ``next_run_at`` update never moves the schedule backwards.
    """
    stmt = (
        select(templates)
        .where(templates.c.active.is_(True), templates.c.next_run_at <= now)
        .order_by(templates.c.next_run_at)
        .limit(limit)
    )
    if db.dialect.supports_skip_locked:
        stmt = stmt.with_for_update(skip_locked=True)
    created = 0
    async with db.transaction() as conn:
        due = [to_template(row) for row in (await conn.execute(stmt)).all()]
        for template in due:
            plan = planner(template)
            if plan is not None:
                created += await _fire_one(conn, db, plan, actor=actor, now=now)
        if created:
            await notify(conn, db.dialect, DUE)  # once per round, not per instance
    return len(due), created


async def _fire_one(
    conn: AsyncConnection, db: Database, plan: Fire, *, actor: str, now: datetime
) -> int:
    t = plan.template
    created = 0
    for when in plan.fire_at:
        if t.overlap_policy is OverlapPolicy.SKIP and await _has_unfinished(conn, t.id):
            data = {"scheduled_for": when, "reason": "previous instance unfinished"}
            kind = EventType.TEMPLATE_TICK_SKIPPED
            await _event(conn, t.id, t.merchant_id, kind, actor, now, data)
            continue
        created += await _insert_instance(conn, db, t, when, actor=actor, now=now)
    await conn.execute(
        update(templates)
        .where(templates.c.id == t.id, templates.c.next_run_at == t.next_run_at)
        .values(
            next_run_at=plan.next_run_at,
            last_scheduled_for=max(plan.fire_at, default=t.last_scheduled_for),
            updated_at=now,
        )
    )
    return created


async def _has_unfinished(conn: AsyncConnection, template_id: str) -> bool:
    stmt = select(jobs.c.id).where(
        jobs.c.template_id == template_id, jobs.c.status.in_(list(UNFINISHED_STATUSES))
    )
    return (await conn.execute(stmt.limit(1))).first() is not None


async def _insert_instance(
    conn: AsyncConnection, db: Database, t: Template, when: datetime, *, actor: str, now: datetime
) -> int:
    new = NewJob(
        task_type=t.task_type,
        run_at=when,
        payload=t.payload,
        schedule_type=t.schedule_type,
        merchant_id=t.merchant_id,
        queue=t.queue,
        priority=t.priority,
        max_attempts=t.max_attempts,
        timeout_seconds=t.timeout_seconds,
        template_id=t.id,
        scheduled_for=when,
    )
    row = job_row(new, now)
    stmt = db.dialect.insert_ignoring_conflicts(jobs).values(row).returning(jobs.c.id)
    if (await conn.execute(stmt)).first() is None:
        return 0  # another manager created this tick's instance first
    await event_log.append(conn, [created_event(row, actor)])
    return 1
