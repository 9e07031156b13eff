"""Templates: create, read, switch on/off, delete, and fire (one instance per tick)."""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.errors import Conflict, NotFound, QuotaExceeded
from taskmill.core.events import EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, UNFINISHED_STATUSES, ScheduleType
from taskmill.core.templates import JobFailurePolicy, MisfirePolicy, OverlapPolicy, Template
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store import events as event_log
from taskmill.store.ahead import withdraw_ahead
from taskmill.store.database import Database
from taskmill.store.dialect import Dialect
from taskmill.store.jobs import WAITING_STATUSES, NewJob, created_event, job_row
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
    on_job_failure: JobFailurePolicy = JobFailurePolicy.KEEP
    max_attempts: int = 1
    timeout_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    declared: bool = False
    """Declared by ``@app.periodic`` (see :func:`declare_templates`)."""


@dataclass(frozen=True, slots=True)
class StoredTemplate(Template):
    """A template as stored: core's :class:`Template` and why it was last switched off
    (``last_error``: a schedule the recurrence manager could not evaluate, or an
    administrator; cleared when its owner changes the schedule or switches it on)."""

    last_error: str | None = None
    declared: bool = False
    """Declared in code by ``@app.periodic`` (see :func:`declare_templates`)."""


def to_template(row: Row[Any]) -> StoredTemplate:
    m = row._mapping
    return StoredTemplate(
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
        on_job_failure=JobFailurePolicy(m["on_job_failure"]),
        max_attempts=m["max_attempts"],
        timeout_seconds=m["timeout_seconds"],
        created_at=m["created_at"],
        last_error=m["last_error"],
        declared=m["declared"],
    )


def _new_row(new: NewTemplate, now: datetime) -> dict[str, Any]:
    """The ``templates`` row of a template to create."""
    return {
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
        "on_job_failure": new.on_job_failure.value,
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "created_at": now,
        "updated_at": now,
        "declared": new.declared,
    }


async def create_template(
    db: Database,
    new: NewTemplate,
    *,
    actor: str,
    now: datetime,
    max_per_merchant: int | None = None,
) -> Template:
    """Insert a template and its ``template.created`` event; a taken name is a ``Conflict``,
    a merchant with ``max_per_merchant`` templates already gets ``QuotaExceeded``.

    The count is read in the inserting transaction: exact on SQLite (one writer), soft on
    PostgreSQL, where creations racing each other may each see room for one more."""
    row = _new_row(new, now)
    async with db.transaction() as conn:
        taken = await conn.execute(
            select(templates.c.id).where(
                templates.c.merchant_id == new.merchant_id, templates.c.name == new.name
            )
        )
        if taken.first() is not None:
            raise Conflict(f"name: a template named {new.name!r} already exists")
        if max_per_merchant is not None:
            await _check_quota(conn, new.merchant_id, max_per_merchant)
        await conn.execute(templates.insert().values(row))
        await _event(conn, row["id"], new.merchant_id, EventType.TEMPLATE_CREATED, actor, now, row)
        await notify(conn, db.dialect, TEMPLATES)
        return await _get(conn, row["id"], ALL_MERCHANTS)


async def _check_quota(conn: AsyncConnection, merchant_id: str, limit: int) -> None:
    # Count at most ``limit`` rows: the cost stays bounded however many there are.
    mine = select(templates.c.id).where(templates.c.merchant_id == merchant_id).limit(limit)
    count = (await conn.execute(select(func.count()).select_from(mine.subquery()))).scalar_one()
    if count >= limit:
        raise QuotaExceeded("templates", limit)


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


async def _get(conn: AsyncConnection, template_id: str, merchant_id: MerchantScope) -> Template:
    stmt = select(templates).where(templates.c.id == template_id)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(templates.c.merchant_id == merchant_id)
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound("template", template_id)
    return to_template(row)


async def _replace_ahead(
    conn: AsyncConnection,
    dialect: Dialect,
    template_id: str,
    values: dict[str, Any],
    *,
    actor: str,
    now: datetime,
) -> None:
    """After a change to a template's row: cancel its instances made ahead of their tick
    (store/ahead.py). Switched off, that is all; otherwise, when the change kept the
    schedule (``next_run_at`` untouched), the schedule goes back to the first tick
    withdrawn, which the recurrence manager makes again from the template as it now is."""
    switched_off = values.get("active") is False
    reason = "its template was switched off" if switched_off else "its template was changed"
    ticks = await withdraw_ahead(conn, dialect, template_id, now=now, actor=actor, reason=reason)
    if not ticks or switched_off or "next_run_at" in values:
        return
    first = ticks[0]
    await conn.execute(
        update(templates)
        .where(
            templates.c.id == template_id,
            templates.c.active.is_(True),
            or_(templates.c.next_run_at.is_(None), templates.c.next_run_at > first),
        )
        .values(next_run_at=first)
    )


async def get_template(db: Database, template_id: str, merchant_id: MerchantScope) -> Template:
    async with db.read() as conn:
        return await _get(conn, template_id, merchant_id)


async def list_templates(
    db: Database,
    merchant_id: MerchantScope,
    *,
    limit: int | None = None,
    after: tuple[datetime, str] | None = None,
) -> list[Template]:
    """Templates oldest first, keyset-paginated by ``(created_at, id)`` after ``after``;
    at most ``limit`` of them (``None``: all, for the library)."""
    stmt = select(templates).order_by(templates.c.created_at, templates.c.id)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(templates.c.merchant_id == merchant_id)
    if after is not None:
        created, ident = after
        stmt = stmt.where(
            templates.c.created_at >= created,
            (templates.c.created_at > created)
            | ((templates.c.created_at == created) & (templates.c.id > ident)),
        )
    if limit is not None:
        stmt = stmt.limit(limit)
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
        "on_job_failure",
        "max_attempts",
        "timeout_seconds",
        "last_error",
    }
)


async def update_template(
    db: Database,
    template_id: str,
    changes: dict[str, Any],
    *,
    actor: str,
    now: datetime,
    merchant_id: MerchantScope,
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
        await _replace_ahead(conn, db.dialect, template_id, values, actor=actor, now=now)
        await notify(conn, db.dialect, TEMPLATES)
        return await _get(conn, template_id, ALL_MERCHANTS)


async def delete_template(
    db: Database, template_id: str, *, actor: str, now: datetime, merchant_id: MerchantScope
) -> None:
    """Delete a template; its past instances stay (their ``template_id`` becomes NULL),
    those made ahead of their tick are cancelled first."""
    async with db.transaction() as conn:
        current = await _get(conn, template_id, merchant_id)
        if db.dialect.supports_skip_locked:  # wait out a round firing it, then see its jobs
            lock = select(templates.c.id).where(templates.c.id == template_id).with_for_update()
            await conn.execute(lock)
        reason = "its template was deleted"
        await withdraw_ahead(conn, db.dialect, template_id, now=now, actor=actor, reason=reason)
        await conn.execute(delete(templates).where(templates.c.id == template_id))
        await _event(
            conn, template_id, current.merchant_id, EventType.TEMPLATE_DELETED, actor, now, {}
        )


# Every app reconciling its declarations takes this lock: several processes starting at
# once create each template once and record each change once.
DECLARATIONS_LOCK_KEY = 0x7A5C_0D11_0000_0002
NO_LONGER_DECLARED = "switched off: its code no longer declares it"

# What a declaration defines: the same values are the same schedule, left untouched.
# ``start_at`` counts only when the declaration gives one (otherwise it is "from now").
DEFINITION_COLUMNS = (
    "task_type",
    "payload",
    "schedule_type",
    "cron_expression",
    "interval_seconds",
    "timezone",
    "end_at",
    "queue",
    "priority",
    "misfire_policy",
    "overlap_policy",
    "on_job_failure",
    "max_attempts",
    "timeout_seconds",
)


@dataclass(frozen=True, slots=True)
class Declaration:
    """A template as code declares it: created if missing, updated if it differs."""

    new: NewTemplate
    start_given: bool = False


@dataclass(frozen=True, slots=True)
class Declared:
    template: Template
    outcome: str
    """``created``, ``updated`` (an event lists the changes) or ``unchanged``."""


async def declare_templates(
    db: Database,
    declarations: Sequence[Declaration],
    *,
    retire: tuple[str, Collection[str]] | None,
    actor: str,
    now: datetime,
    max_per_merchant: int | None = None,
) -> list[Declared]:
    """Reconcile templates with their declarations in code, by name, in one transaction:
    a missing one is created, one that differs is updated (its next fire recomputed from
    now, one ``template.updated`` event), an equal one is left alone. A template this
    reconciliation switched off earlier is switched on again when declared again.

    ``retire``: ``(merchant_id, task_types)``: that merchant's declared templates of those
    task types that no declaration names are switched off (``last_error`` says why)."""
    async with db.transaction() as conn:
        lock = db.dialect.transaction_lock(DECLARATIONS_LOCK_KEY)
        if lock is not None:
            await conn.execute(lock)
        done = [
            await _declare_one(
                conn, db.dialect, d, actor=actor, now=now, max_per_merchant=max_per_merchant
            )
            for d in declarations
        ]
        if retire is not None:
            merchant_id, task_types = retire
            names = [d.new.name for d in declarations]
            await _retire(conn, db.dialect, merchant_id, task_types, names, actor=actor, now=now)
        if any(d.outcome != "unchanged" for d in done):
            await notify(conn, db.dialect, TEMPLATES)
        return done


async def _declare_one(
    conn: AsyncConnection,
    dialect: Dialect,
    declaration: Declaration,
    *,
    actor: str,
    now: datetime,
    max_per_merchant: int | None,
) -> Declared:
    new = declaration.new
    found = (
        await conn.execute(
            select(templates).where(
                templates.c.merchant_id == new.merchant_id, templates.c.name == new.name
            )
        )
    ).first()
    if found is None:
        if max_per_merchant is not None:
            await _check_quota(conn, new.merchant_id, max_per_merchant)
        row = _new_row(new, now)
        await conn.execute(templates.insert().values(row))
        await _event(conn, row["id"], new.merchant_id, EventType.TEMPLATE_CREATED, actor, now, row)
        return Declared(await _get(conn, row["id"], ALL_MERCHANTS), "created")
    wanted = _new_row(new, now)
    stored = found._mapping
    columns = DEFINITION_COLUMNS + (("start_at",) if declaration.start_given else ())
    changes = {c: wanted[c] for c in columns if not _same(c, stored[c], wanted[c])}
    if changes:
        # A new definition starts from now: its next fire and its anchor.
        changes |= {"next_run_at": wanted["next_run_at"], "last_error": None}
        if not declaration.start_given:
            changes["start_at"] = wanted["start_at"]
    if not stored["active"] and stored["last_error"] == NO_LONGER_DECLARED:
        changes |= {"active": True, "last_error": None, "next_run_at": wanted["next_run_at"]}
    if new.declared and not stored["declared"]:
        changes["declared"] = True
    if not changes:
        return Declared(to_template(found), "unchanged")
    await conn.execute(
        update(templates).where(templates.c.id == found.id).values(**changes, updated_at=now)
    )
    logged = {k: v for k, v in changes.items() if k != "declared"}
    await _event(conn, found.id, new.merchant_id, EventType.TEMPLATE_UPDATED, actor, now, logged)
    if logged:
        await _replace_ahead(conn, dialect, found.id, logged, actor=actor, now=now)
    return Declared(await _get(conn, found.id, ALL_MERCHANTS), "updated")


def _same(column: str, stored: Any, wanted: Any) -> bool:
    if column == "payload":  # as JSON holds it: a tuple declared is a list stored
        return bool(stored == json.loads(json.dumps(wanted)))
    return bool(stored == wanted)


async def _retire(
    conn: AsyncConnection,
    dialect: Dialect,
    merchant_id: str,
    task_types: Collection[str],
    keep: Sequence[str],
    *,
    actor: str,
    now: datetime,
) -> None:
    retired = await conn.execute(
        update(templates)
        .where(
            templates.c.merchant_id == merchant_id,
            templates.c.declared.is_(True),
            templates.c.active.is_(True),
            templates.c.task_type.in_(list(task_types)),
            templates.c.name.not_in(list(keep)),
        )
        .values(active=False, last_error=NO_LONGER_DECLARED, updated_at=now)
        .returning(templates.c.id)
    )
    values = {"active": False, "last_error": NO_LONGER_DECLARED}
    for (template_id,) in retired.all():
        await _event(conn, template_id, merchant_id, EventType.TEMPLATE_UPDATED, actor, now, values)
        await _replace_ahead(conn, dialect, template_id, values, actor=actor, now=now)


async def next_template_due_at(db: Database, ahead_seconds: float = 0.0) -> datetime | None:
    """The earliest ``next_run_at`` of an active template; with ``ahead_seconds``, that
    many seconds earlier for templates made ahead (all but overlap ``skip``, which are
    made at their tick).

    Each read walks the (active, next_run_at) index and stops: the earliest template,
    and only when it is a ``skip`` one, the earliest other within ``ahead_seconds`` of
    it (a filter on ``overlap_policy`` alone would read the whole table when no
    template has that policy)."""
    waiting = select(templates.c.next_run_at, templates.c.overlap_policy).where(
        templates.c.active.is_(True), templates.c.next_run_at.is_not(None)
    )
    waiting = waiting.order_by(templates.c.next_run_at).limit(1)
    ahead = timedelta(seconds=ahead_seconds)
    async with db.read() as conn:
        first = (await conn.execute(waiting)).first()
        if first is None or ahead_seconds <= 0:
            return None if first is None else first.next_run_at
        earliest: datetime = first.next_run_at
        if first.overlap_policy != OverlapPolicy.SKIP.value:
            return earliest - ahead
        soon = waiting.where(
            templates.c.next_run_at < earliest + ahead,
            templates.c.overlap_policy != OverlapPolicy.SKIP.value,
        )
        other = (await conn.execute(soon)).first()
    return earliest if other is None else min(earliest, other.next_run_at - ahead)


@dataclass(frozen=True, slots=True)
class Fire:
    """Instances to create for one template, and where its schedule moves to."""

    template: Template
    fire_at: list[datetime]
    next_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class Broken:
    """A due template that cannot be fired (its schedule cannot be evaluated, or its row
    cannot be read): it is switched off with ``reason`` as its ``last_error``."""

    template_id: str
    merchant_id: str
    due_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class FireRound:
    """What one :func:`fire_due` did."""

    taken: int
    created: int
    broken: list[Broken] = field(default_factory=list)


def _is_due(now: datetime, ahead_until: datetime | None) -> tuple[ColumnElement[bool], ...]:
    """Active and due by ``now`` or, for a template whose overlap policy lets its
    instances be made ahead (not ``skip``, which judges "unfinished" at the tick), by
    ``ahead_until``. The range on ``next_run_at`` keeps it on the (active, next_run_at)
    index: a round reads the templates due, not the table."""
    active = templates.c.active.is_(True)
    if ahead_until is None or ahead_until <= now:
        return (active, templates.c.next_run_at <= now)
    ahead = templates.c.overlap_policy != OverlapPolicy.SKIP.value
    return (
        active,
        templates.c.next_run_at <= ahead_until,
        or_(templates.c.next_run_at <= now, ahead),
    )


def _due_in_turn(now: datetime, limit: int, ahead_until: datetime | None) -> Select[Any]:
    """Due active templates, merchants taking turns: each merchant's most overdue first,
    then each one's second, and so on, so that one merchant with thousands of due
    templates fills at most its share of a round while another's wait (as the queue
    populator does for jobs). Ranked in a subquery: PostgreSQL refuses ``FOR UPDATE``
    beside a window function."""
    due = _is_due(now, ahead_until)
    turn = func.row_number().over(
        partition_by=templates.c.merchant_id, order_by=(templates.c.next_run_at, templates.c.id)
    )
    ranked = select(templates.c.id, templates.c.next_run_at, turn.label("turn")).where(*due)
    ranked_sq = ranked.subquery()
    return (
        select(templates)
        .join(ranked_sq, ranked_sq.c.id == templates.c.id)
        .where(*due)  # rechecked: a row changed meanwhile is judged as it is now
        .order_by(ranked_sq.c.turn, ranked_sq.c.next_run_at, templates.c.id)
        .limit(limit)
    )


async def fire_due(
    db: Database,
    now: datetime,
    limit: int,
    planner: Callable[[Template], Fire | Broken | None],
    *,
    actor: str,
    max_pending_per_merchant: int | None = None,
    ahead_until: datetime | None = None,
) -> FireRound:
    """Take up to ``limit`` active templates whose ``next_run_at`` has come (merchants in
    turn; with ``ahead_until``, see :func:`_is_due`), plan each with ``planner``
    (``None``: leave it; :class:`Broken`: switch it off), create the planned instances
    and advance each ``next_run_at``, all in one transaction (one commit per round, not
    per template).

    One template's failure is its own: a row that cannot be read or a schedule the
    planner cannot evaluate switches that template off (``last_error`` and a
    ``template.error`` event) and the round goes on with the others. With
    ``max_pending_per_merchant``, a tick of a merchant with that many jobs waiting to
    start is skipped (a ``template.tick_skipped`` event) and the schedule moves on.

    The due templates are locked with SKIP LOCKED, so recurrence managers running side by
    side fire disjoint templates instead of all doing every one (and queueing on each
    other's unique-index inserts). Should two still fire one tick, the unique
    ``(template_id, scheduled_for)`` makes the second insert a no-op, and the guarded
    ``next_run_at`` update never moves the schedule backwards.
    """
    stmt = _due_in_turn(now, limit, ahead_until)
    if db.dialect.supports_skip_locked:
        stmt = stmt.with_for_update(skip_locked=True, of=templates)
    broken: list[Broken] = []
    async with db.transaction() as conn:
        rows = (await conn.execute(stmt)).all()
        pending = await _pending_counts(conn, rows, max_pending_per_merchant)
        done = _Round()
        for row in rows:
            plan = _plan_row(row, planner)
            if isinstance(plan, Broken):
                broken.append(plan)
                await _switch_off(conn, db.dialect, plan, actor=actor, now=now)
            elif plan is not None:
                await _plan_one(conn, plan, pending, done, actor=actor, now=now)
        created = await _write_round(conn, db, done, actor=actor, now=now)
        if created:
            await notify(conn, db.dialect, DUE)  # once per round, not per instance
    return FireRound(len(rows), created, broken)


def _plan_row(
    row: Row[Any], planner: Callable[[Template], Fire | Broken | None]
) -> Fire | Broken | None:
    m = row._mapping
    try:
        template = to_template(row)
    except (ValueError, TypeError, KeyError) as exc:  # a row no API could have written
        reason = f"the stored template cannot be read ({type(exc).__name__})"
        return Broken(m["id"], m["merchant_id"], m["next_run_at"], reason)
    return planner(template)


async def _switch_off(
    conn: AsyncConnection, dialect: Dialect, broken: Broken, *, actor: str, now: datetime
) -> None:
    # Guarded like _fire_one: a replica that already moved or changed it wins.
    await conn.execute(
        update(templates)
        .where(templates.c.id == broken.template_id, templates.c.next_run_at == broken.due_at)
        .values(active=False, next_run_at=None, last_error=broken.reason, updated_at=now)
    )
    data = {"reason": broken.reason, "due_at": broken.due_at, "active": False}
    kind = EventType.TEMPLATE_ERROR
    await _event(conn, broken.template_id, broken.merchant_id, kind, actor, now, data)
    off = {"active": False}
    await _replace_ahead(conn, dialect, broken.template_id, off, actor=actor, now=now)


class _Pending:
    """Jobs waiting to start per merchant, counted once per round and kept up to date as
    the round creates more; ``cap`` ``None``: no quota, nothing counted."""

    def __init__(self, cap: int | None, counts: dict[str, int]) -> None:
        self.cap = cap
        self.counts = counts

    def full(self, merchant_id: str) -> bool:
        return self.cap is not None and self.counts.get(merchant_id, 0) >= self.cap

    def add(self, merchant_id: str, n: int) -> None:
        if self.cap is not None:
            self.counts[merchant_id] = self.counts.get(merchant_id, 0) + n


async def _pending_counts(conn: AsyncConnection, rows: list[Row[Any]], cap: int | None) -> _Pending:
    if cap is None or not rows:
        return _Pending(cap, {})
    merchants = sorted({row._mapping["merchant_id"] for row in rows})
    stmt = (
        select(jobs.c.merchant_id, func.count())
        .where(jobs.c.merchant_id.in_(merchants), jobs.c.status.in_(list(WAITING_STATUSES)))
        .group_by(jobs.c.merchant_id)
    )
    counts = {merchant: n for merchant, n in (await conn.execute(stmt)).all()}  # noqa: C416
    return _Pending(cap, counts)


@dataclass(slots=True)
class _Round:
    """What a round writes once every due template is planned: the instances (one
    multi-row insert), their templates' moves (one executemany update)."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    moves: list[dict[str, Any]] = field(default_factory=list)
    planned: set[str] = field(default_factory=set)  # templates with an instance this round


async def _plan_one(
    conn: AsyncConnection, plan: Fire, pending: _Pending, done: _Round, *, actor: str, now: datetime
) -> None:
    t = plan.template
    for when in plan.fire_at:
        reason = await _skip_reason(conn, t, pending, done)
        if reason is not None:
            data = {"scheduled_for": when, "reason": reason}
            kind = EventType.TEMPLATE_TICK_SKIPPED
            await _event(conn, t.id, t.merchant_id, kind, actor, now, data)
            continue
        done.instances.append(_instance_row(t, when, now))
        done.planned.add(t.id)
        pending.add(t.merchant_id, 1)
    done.moves.append(
        {
            "t_id": t.id,
            "t_due": t.next_run_at,
            "t_next": plan.next_run_at,
            "t_last": max(plan.fire_at, default=t.last_scheduled_for),
        }
    )


async def _skip_reason(
    conn: AsyncConnection, t: Template, pending: _Pending, done: _Round
) -> str | None:
    if pending.full(t.merchant_id):
        return f"the merchant has {pending.cap} jobs waiting to start (its quota)"
    if t.overlap_policy is OverlapPolicy.SKIP and (
        t.id in done.planned or await _has_unfinished(conn, t.id)
    ):
        return "previous instance unfinished"
    return None


async def _has_unfinished(conn: AsyncConnection, template_id: str) -> bool:
    stmt = select(jobs.c.id).where(
        jobs.c.template_id == template_id, jobs.c.status.in_(list(UNFINISHED_STATUSES))
    )
    return (await conn.execute(stmt.limit(1))).first() is not None


def _instance_row(t: Template, when: datetime, now: datetime) -> dict[str, Any]:
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
    return job_row(new, now)


# The moves, executemany'd; the guard on next_run_at never moves a schedule another
# manager moved already (nor backwards).
_MOVE = (
    update(templates)
    .where(templates.c.id == bindparam("t_id"), templates.c.next_run_at == bindparam("t_due"))
    .values(
        next_run_at=bindparam("t_next"),
        last_scheduled_for=bindparam("t_last"),
        updated_at=bindparam("t_now"),
    )
)


async def _write_round(
    conn: AsyncConnection, db: Database, done: _Round, *, actor: str, now: datetime
) -> int:
    """Insert the round's instances (a tick another manager made already is skipped by
    the unique ``(template_id, scheduled_for)``), their ``job.created`` events, and move
    the schedules on: a handful of statements per round, not three per instance."""
    created: set[str] = set()
    if done.instances:
        stmt = db.dialect.insert_ignoring_conflicts(jobs).returning(jobs.c.id)
        created = set((await conn.execute(stmt, done.instances)).scalars())
        made = [row for row in done.instances if row["id"] in created]
        await event_log.append(conn, [created_event(row, actor) for row in made])
    if done.moves:
        await conn.execute(_MOVE, [{**move, "t_now": now} for move in done.moves])
    return len(created)
