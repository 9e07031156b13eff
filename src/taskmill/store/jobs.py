"""Creating and reading jobs. Status changes go through ``transition.py`` only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Text, cast, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.dependencies import parse_policy
from taskmill.core.errors import Conflict, NotFound, ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import (
    DEFAULT_MERCHANT_ID,
    SEARCH_MAX_LENGTH,
    TERMINAL_STATUSES,
    UNIQUE_WHILE,
    DependencyFailurePolicy,
    Job,
    JobFilter,
    JobStatus,
    ScheduleType,
)
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.dependencies import check_upstream
from taskmill.store.dialect import Dialect
from taskmill.store.events import NewEvent
from taskmill.store.notify import DUE, QUEUED, notify
from taskmill.store.records import to_job, to_job_dict
from taskmill.store.schema import job_dependencies, jobs
from taskmill.store.transition import NOT_REPLAYED


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer asks for; validated by the service layer before it gets here."""

    task_type: str
    run_at: datetime
    payload: Any = None
    schedule_type: ScheduleType = ScheduleType.IMMEDIATE
    merchant_id: str = DEFAULT_MERCHANT_ID
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1
    timeout_seconds: float | None = None
    idempotency_key: str | None = None
    template_id: str | None = None
    scheduled_for: datetime | None = None
    depends_on: Sequence[str] = field(default_factory=tuple)
    trace_context: str | None = None
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.CANCEL
    unique_key: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedJob:
    """The job, and whether this call created it (``False``: the idempotency key or the
    unique key matched)."""

    job: Job
    created: bool


async def create_job(
    db: Database, new: NewJob, *, actor: str, now: datetime, queue_if_due: bool = False
) -> CreatedJob:
    """Insert ``new`` with its events in one transaction: ``scheduled`` or, with
    ``queue_if_due`` and :func:`starts_queued`, ``queued``.

    With an ``idempotency_key`` already used by the merchant, returns that job unchanged;
    with a ``unique_key`` the merchant's unfinished job holds, returns that job.
    """
    if fits_batch(new):
        made = make_job(new, now, actor, queue_if_due)
        await insert_made(db, [made])
        return CreatedJob(to_job_dict(made.row), created=True)
    try:
        async with db.transaction() as conn:
            return await create_in(
                conn, db.dialect, new, actor=actor, now=now, queue_if_due=queue_if_due
            )
    except Conflict:
        # A concurrent create with the same key committed between the look-up and the
        # insert (PostgreSQL, read committed): the unique index refused ours, and the
        # job it protects is the answer. The failed transaction was rolled back whole.
        existing = await _committed_match(db, new)
        if existing is None:
            raise
        return CreatedJob(existing, created=False)


async def create_in(
    conn: AsyncConnection,
    dialect: Dialect,
    new: NewJob,
    *,
    actor: str,
    now: datetime,
    queue_if_due: bool = False,
) -> CreatedJob:
    """:func:`create_job`'s look-up and insert in the caller's transaction."""
    existing = await matching_job(conn, new)
    if existing is not None:
        return CreatedJob(existing, created=False)
    job = await insert_job(conn, dialect, new, actor=actor, now=now, queue_if_due=queue_if_due)
    return CreatedJob(job, created=True)


async def matching_job(conn: AsyncConnection, new: NewJob) -> Job | None:
    """The merchant's job ``new``'s idempotency key names, else the unfinished one
    holding its unique key (ADR 0013); ``None`` if neither."""
    if new.idempotency_key is not None:
        found = await _by_idempotency_key(conn, new.merchant_id, new.idempotency_key)
        if found is not None:
            return found
    if new.unique_key is not None:
        return await by_unique_key(conn, new.merchant_id, new.unique_key)
    return None


async def _committed_match(db: Database, new: NewJob) -> Job | None:
    async with db.read() as conn:
        return await matching_job(conn, new)


async def by_unique_key(conn: AsyncConnection, merchant_id: str, key: str) -> Job | None:
    """The merchant's unfinished job holding ``key`` (at most one: the partial index)."""
    stmt = select(jobs).where(
        jobs.c.merchant_id == merchant_id,
        jobs.c.unique_key == key,
        jobs.c.status.in_(sorted(UNIQUE_WHILE)),
    )
    row = (await conn.execute(stmt)).first()
    return to_job(row) if row else None


@dataclass(frozen=True, slots=True)
class MadeJob:
    """A job ready to insert: its ``jobs`` row and its events (see :func:`new_job`)."""

    row: dict[str, Any]
    events: list[NewEvent]

    @property
    def job(self) -> Job:
        """The job as it is once inserted."""
        return to_job_dict(self.row)


def fits_batch(new: NewJob) -> bool:
    """Whether ``new`` can be created by :func:`insert_made`, in a batch with others: it
    has no idempotency or unique key to look up and no dependency to check first."""
    return new.idempotency_key is None and new.unique_key is None and not new.depends_on


def make_job(new: NewJob, now: datetime, actor: str, queue_if_due: bool) -> MadeJob:
    """Validate ``new`` and build its row and events (nothing is written)."""
    parse_policy(new.on_dependency_failure)
    row, new_events = new_job(new, now, actor, queue_if_due)
    return MadeJob(row, new_events)


async def insert_made(db: Database, made: Sequence[MadeJob]) -> None:
    """Insert ``made`` (from :func:`make_job`), their events and the wake-ups in one
    write transaction, all or nothing (PostgreSQL's driver: one statement,
    ``store/postgres/statements.py``)."""
    if not made:
        return
    await _insert_all(db, [m.row for m in made], [e for m in made for e in m.events])


async def _insert_all(db: Database, rows: list[dict[str, Any]], new_events: list[NewEvent]) -> None:
    """Insert ``rows`` and their events in one transaction, one multi-row insert each (a
    plain ``insert()`` with the rows as parameters: its compiled form is cached)."""

    async def insert_in(conn: AsyncConnection) -> None:
        await conn.execute(insert(jobs), rows)
        await event_log.append(conn, new_events)
        for channel in sorted({wake(row) for row in rows}):
            await notify(conn, db.dialect, channel)

    await db.write(insert_in)


async def insert_job(
    conn: AsyncConnection,
    dialect: Dialect,
    new: NewJob,
    *,
    actor: str,
    now: datetime,
    queue_if_due: bool = False,
) -> Job:
    """Insert one job and its events in the caller's transaction (see :func:`create_job`)."""
    policy = parse_policy(new.on_dependency_failure)
    upstream = await check_upstream(conn, dialect, new.merchant_id, new.depends_on, policy)
    row, new_events = new_job(new, now, actor, queue_if_due)
    await conn.execute(insert(jobs), row)
    if upstream:
        await conn.execute(
            insert(job_dependencies),
            [{"job_id": row["id"], "depends_on_job_id": dep} for dep in upstream],
        )
    await event_log.append(conn, new_events)
    await notify(conn, dialect, wake(row))
    return to_job_dict(row)


async def create_jobs(
    db: Database,
    news: Sequence[NewJob],
    *,
    actor: str,
    now: datetime,
    queue_if_due: bool = False,
    insert: Callable[[Sequence[MadeJob]], Awaitable[None]] | None = None,
) -> list[Job]:
    """Insert many independent jobs (no idempotency keys, no dependencies) and their
    events in one transaction: one multi-row insert each, instead of a round trip per job.
    All or nothing. A job with a unique key the merchant's unfinished job holds (or an
    earlier job of the batch) is that job instead, in its place in the answer. Jobs
    without unique keys go through ``insert`` (the driver's ``insert_jobs``; default
    :func:`insert_made`)."""
    check_bulk(news)
    if any(new.unique_key is not None for new in news):
        return await _create_unique_batch(db, news, actor=actor, now=now, queue_if_due=queue_if_due)
    made = [make_job(new, now, actor, queue_if_due) for new in news]
    if insert is None:
        await insert_made(db, made)
    else:
        await insert(made)
    return [m.job for m in made]


def check_bulk(news: Sequence[NewJob]) -> None:
    """Refuse what bulk creation does not take: idempotency keys and dependencies."""
    for new in news:
        if new.idempotency_key is not None or new.depends_on:
            raise ValidationError(
                "jobs",
                "bulk creation takes no idempotency_key or depends_on; create those one by one",
            )


# A batch refused by the unique index (a concurrent producer took one of its keys) is
# tried again this many times: each try finds the keys taken so far.
UNIQUE_TRIES = 3
T = TypeVar("T")


async def retrying_conflicts(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``, tried again while a concurrent producer's key refuses it
    (``Conflict``), ``UNIQUE_TRIES`` times in all: each try finds the keys taken so far."""
    for _ in range(UNIQUE_TRIES - 1):
        try:
            return await attempt()
        except Conflict:
            continue
    return await attempt()


async def _create_unique_batch(
    db: Database, news: Sequence[NewJob], *, actor: str, now: datetime, queue_if_due: bool
) -> list[Job]:
    async def create(conn: AsyncConnection) -> list[Job]:
        made = await create_batch_in(
            conn, db.dialect, news, actor=actor, now=now, queue_if_due=queue_if_due
        )
        return [c.job for c in made]

    return await retrying_conflicts(lambda: db.write(create))


async def create_batch_in(
    conn: AsyncConnection,
    dialect: Dialect,
    news: Sequence[NewJob],
    *,
    actor: str,
    now: datetime,
    queue_if_due: bool = False,
) -> list[CreatedJob]:
    """Bulk creation in the caller's transaction (see :func:`create_jobs`), one look-up
    per unique key: the jobs, each new or the one its unique key matched."""
    held: dict[tuple[str, str], Job] = {}
    out: list[CreatedJob] = []
    rows: list[dict[str, Any]] = []
    new_events: list[NewEvent] = []
    for new in news:
        key = None if new.unique_key is None else (new.merchant_id, new.unique_key)
        if key is not None:
            found = held.get(key) or await by_unique_key(conn, *key)
            if found is not None:
                held[key] = found
                out.append(CreatedJob(found, created=False))
                continue
        row, events_of_row = new_job(new, now, actor, queue_if_due)
        rows.append(row)
        new_events.extend(events_of_row)
        job = to_job_dict(row)
        if key is not None:
            held[key] = job
        out.append(CreatedJob(job, created=True))
    if rows:
        await conn.execute(insert(jobs), rows)
        await event_log.append(conn, new_events)
        for channel in sorted({wake(row) for row in rows}):
            await notify(conn, dialect, channel)
    return out


def starts_queued(new: NewJob, now: datetime) -> bool:
    """Whether ``new`` may be created ``queued``: due at creation and waiting for nothing
    (no dependency, no template sibling), it needs no populator round, as River and Oban
    insert such jobs "available". Its creator must announce it to the broker."""
    return new.run_at <= now and not new.depends_on and new.template_id is None


def new_job(
    new: NewJob, now: datetime, actor: str, queue_if_due: bool = False
) -> tuple[dict[str, Any], list[NewEvent]]:
    """The ``jobs`` row to insert for ``new`` and its events: ``job.created`` and, with
    ``queue_if_due`` for a job that :func:`starts_queued`, ``job.queued`` (the log shows
    every transition)."""
    row = job_row(new, now)
    created = created_event(row, actor)
    if not (queue_if_due and starts_queued(new, now)):
        return row, [created]
    row.update(status=JobStatus.QUEUED, queued_at=now)
    queued = NewEvent(
        type=EventType.JOB_QUEUED,
        merchant_id=row["merchant_id"],
        actor=actor,
        occurred_at=now,
        job_id=row["id"],
        data={
            "from": JobStatus.SCHEDULED,
            "to": JobStatus.QUEUED,
            "changes": {"status": JobStatus.QUEUED, "queued_at": now},
        },
    )
    return row, [created, queued]


def wake(row: dict[str, Any]) -> str:
    """Who a new row wakes in other processes: workers for a queued job, else populators."""
    return QUEUED if row["status"] is JobStatus.QUEUED else DUE


def created_event(row: dict[str, Any], actor: str) -> event_log.NewEvent:
    """The ``job.created`` event for a freshly inserted row: the whole replayable row."""
    return event_log.NewEvent(
        type=EventType.JOB_CREATED,
        merchant_id=row["merchant_id"],
        actor=actor,
        occurred_at=row["created_at"],
        job_id=row["id"],
        template_id=row["template_id"],
        data={
            "to": JobStatus.SCHEDULED,
            "changes": {k: v for k, v in row.items() if k not in NOT_REPLAYED},
        },
    )


def job_row(new: NewJob, now: datetime) -> dict[str, Any]:
    """The full ``jobs`` row for ``new``, status ``scheduled``, attempt 0."""
    if new.max_attempts < 1:
        raise ValidationError("max_attempts", "must be at least 1")
    return {
        "id": str(uuid.uuid4()),
        "merchant_id": new.merchant_id,
        "template_id": new.template_id,
        "task_type": new.task_type,
        "queue": new.queue,
        "priority": new.priority,
        "payload": new.payload,
        "status": JobStatus.SCHEDULED,
        "schedule_type": new.schedule_type,
        "run_at": new.run_at,
        "scheduled_for": new.scheduled_for,
        "attempt": 0,
        "max_attempts": new.max_attempts,
        "timeout_seconds": new.timeout_seconds,
        "idempotency_key": new.idempotency_key,
        "worker_id": None,
        "lease_expires_at": None,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "last_error": None,
        "cancel_reason": None,
        "created_at": now,
        "updated_at": now,
        "trace_context": new.trace_context,
        "on_dependency_failure": parse_policy(new.on_dependency_failure),
        "unique_key": new.unique_key,
    }


async def _by_idempotency_key(conn: AsyncConnection, merchant_id: str, key: str) -> Job | None:
    stmt = select(jobs).where(jobs.c.merchant_id == merchant_id, jobs.c.idempotency_key == key)
    row = (await conn.execute(stmt)).first()
    return to_job(row) if row else None


async def _get(conn: AsyncConnection, job_id: str, merchant_id: MerchantScope) -> Job:
    stmt = select(jobs).where(jobs.c.id == job_id)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound("job", job_id)
    return to_job(row)


async def get_job(db: Database, job_id: str, merchant_id: MerchantScope) -> Job:
    """The job, or :class:`NotFound` (also when it belongs to another merchant)."""
    async with db.read() as conn:
        return await _get(conn, job_id, merchant_id)


def _filtered(merchant_id: MerchantScope, flt: JobFilter) -> Select[Any]:
    stmt = select(jobs)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    if flt.statuses:
        stmt = stmt.where(jobs.c.status.in_(list(flt.statuses)))
    if flt.task_type is not None:
        stmt = stmt.where(jobs.c.task_type == flt.task_type)
    if flt.template_id is not None:
        stmt = stmt.where(jobs.c.template_id == flt.template_id)
    for column, low, high in (
        (jobs.c.created_at, flt.created_after, flt.created_before),
        (jobs.c.run_at, flt.run_after, flt.run_before),
    ):
        if low is not None:
            stmt = stmt.where(column >= low)
        if high is not None:
            stmt = stmt.where(column < high)
    if flt.search is not None:
        stmt = stmt.where(_matching(flt.search))
    if flt.after is not None:
        stmt = stmt.where(*_after(flt.after, newest_first=flt.newest_first))
    return stmt


def _after(cursor: tuple[datetime, str], *, newest_first: bool) -> list[ColumnElement[bool]]:
    """The rows past ``cursor`` in the listing's order."""
    created, ident = cursor
    # The first condition is implied by the second; it lets the index seek straight to
    # the cursor instead of filtering every row before it.
    if newest_first:
        return [
            jobs.c.created_at <= created,
            (jobs.c.created_at < created) | ((jobs.c.created_at == created) & (jobs.c.id < ident)),
        ]
    return [
        jobs.c.created_at >= created,
        (jobs.c.created_at > created) | ((jobs.c.created_at == created) & (jobs.c.id > ident)),
    ]


def _matching(text: str) -> ColumnElement[bool]:
    """Jobs whose id is ``text``, or whose task type or payload's JSON text contains it
    (case-insensitively; ``%``, ``_`` and ``/`` match themselves). The payload is also
    searched for ``text`` as JSON writes it inside a string (quotes, backslashes and, as
    SQLite stores it, non-ASCII letters escaped). A payload match reads every one of the
    merchant's jobs the other filters leave: no index serves it."""
    if not 1 <= len(text) <= SEARCH_MAX_LENGTH:
        raise ValidationError("q", f"must be 1 to {SEARCH_MAX_LENGTH} characters")
    payload = cast(jobs.c.payload, Text)
    clauses = [
        jobs.c.id == text,
        jobs.c.task_type.icontains(text, autoescape=True),
        payload.icontains(text, autoescape=True),
    ]
    escaped = json.dumps(text)[1:-1]
    if escaped != text:
        clauses.append(payload.icontains(escaped, autoescape=True))
    return or_(*clauses)


async def list_jobs(db: Database, merchant_id: MerchantScope, flt: JobFilter) -> list[Job]:
    """The merchant's jobs matching ``flt``, oldest first (or newest first)."""
    if not 1 <= flt.limit <= 10_000:
        raise ValidationError("limit", "must be between 1 and 10000")
    key = (jobs.c.created_at, jobs.c.id)
    order = [column.desc() for column in key] if flt.newest_first else list(key)
    stmt = _filtered(merchant_id, flt).order_by(*order).limit(flt.limit)
    async with db.read() as conn:
        return [to_job(row) for row in (await conn.execute(stmt)).all()]


async def count_by_status(db: Database, merchant_id: MerchantScope) -> dict[JobStatus, int]:
    """How many jobs are in each status."""
    stmt = select(jobs.c.status, func.count()).group_by(jobs.c.status)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(jobs.c.merchant_id == merchant_id)
    async with db.read() as conn:
        counts = {JobStatus(s): n for s, n in (await conn.execute(stmt)).all()}
    return {status: counts.get(status, 0) for status in JobStatus}


# Jobs that wait to start: what a merchant's pending-jobs quota counts.
WAITING_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


async def pending_jobs(db: Database, merchant_id: str, limit: int) -> int:
    """How many of the merchant's jobs wait to start, counting at most ``limit`` rows
    (the quota check needs no more, and its cost stays bounded)."""
    mine = (
        select(jobs.c.id)
        .where(jobs.c.merchant_id == merchant_id, jobs.c.status.in_(list(WAITING_STATUSES)))
        .limit(limit)
    )
    counted = select(func.count()).select_from(mine.subquery())
    async with db.read() as conn:
        return int((await conn.execute(counted)).scalar_one())


# The most ids :func:`finished_jobs` reads at once (its ``IN`` list).
MAX_FINISHED_IDS = 1_000


async def finished_jobs(db: Database, job_ids: Sequence[str]) -> list[Job]:
    """Those of ``job_ids`` that are finished (succeeded, failed or cancelled), any
    merchant's: one read for every caller waiting in this process (``services/waiting.py``)."""
    if len(job_ids) > MAX_FINISHED_IDS:
        raise ValidationError("job_ids", f"at most {MAX_FINISHED_IDS} at once")
    if not job_ids:
        return []
    stmt = select(jobs).where(
        db.dialect.one_of(jobs.c.id, list(job_ids)),
        jobs.c.status.in_(sorted(TERMINAL_STATUSES)),
    )
    async with db.read() as conn:
        return [to_job(row) for row in (await conn.execute(stmt)).all()]
