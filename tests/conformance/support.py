"""What every transition of a job is checked for, on every writer and both drivers.

(a) the row: each test asserts the fields its transition owns; (b) the log: exactly one
event per job per transition, with its type, actor, ``from``/``to`` and the set of
columns it records (:func:`assert_logged`); (c) the fence: a stale writer changes no row,
event or run (:func:`unchanged`); (d) replay: the log rebuilds the table, and every
job's events are a path of the state machine (``check_invariants``, I2-I4).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes, workers
from taskmill.store.database import Database
from taskmill.store.events import jsonable, list_events
from taskmill.store.schema import events, job_dependencies, job_runs, jobs
from tests.history import check_invariants
from tests.store import claim_params

# The columns each transition records in its event's ``changes`` (``status`` always).
QUEUED = frozenset({"status", "queued_at"})
STARTED = frozenset({"status", "worker_id", "attempt", "lease_expires_at", "started_at"})
SUCCEEDED = frozenset({"status", "result", "finished_at", "lease_expires_at", "last_error"})
RETRY_SCHEDULED = frozenset({"status", "run_at", "worker_id", "last_error", "lease_expires_at"})
FAILED = frozenset({"status", "finished_at", "last_error", "lease_expires_at"})
RELEASED = frozenset({"status", "run_at", "max_attempts", "worker_id", "lease_expires_at"})
CANCELLED = frozenset({"status", "cancel_reason", "finished_at", "lease_expires_at"})
LEASE_EXPIRED = frozenset({"status", "worker_id", "lease_expires_at", "run_at", "last_error"})
FAILED_LOST = FAILED
RETRIED = frozenset({"status", "run_at", "max_attempts", "finished_at", "worker_id"})
CASCADE_CANCELLED = frozenset({"status", "cancel_reason", "finished_at"})
# job.created records the whole row but what replay leaves out (transition.NOT_REPLAYED).
CREATED = frozenset(jobs.c.keys()) - {"updated_at", "lease_expires_at"}


@dataclass(frozen=True, slots=True)
class Logged:
    """The event one transition must write for one job; ``came_from`` ``None``: none
    (``job.created``). ``extra``: the data beside ``from``, ``to`` and ``changes``."""

    type: EventType
    actor: str
    to: JobStatus
    changes: frozenset[str]
    came_from: JobStatus | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def failed_logged(actor: str, changes: frozenset[str], reason: str) -> Logged:
    """``job.failed`` from ``running``, by ``actor`` (the worker or the watcher)."""
    return Logged(
        EventType.JOB_FAILED,
        actor,
        JobStatus.FAILED,
        changes,
        JobStatus.RUNNING,
        {"reason": reason},
    )


async def log_mark(db: Database) -> int:
    """The id of the last event so far: :func:`assert_logged` checks what comes after."""
    async with db.read() as conn:
        return int((await conn.execute(select(func.coalesce(func.max(events.c.id), 0)))).one()[0])


async def job_row(db: Database, job_id: str) -> dict[str, Any]:
    """The whole ``jobs`` row, with the columns ``Job`` leaves out (``updated_at``...)."""
    async with db.read() as conn:
        return dict((await conn.execute(select(jobs).where(jobs.c.id == job_id))).one()._mapping)


async def assert_logged(db: Database, since: int, expected: Mapping[str, Sequence[Logged]]) -> None:
    """The events after ``since`` are exactly ``expected``'s, job by job, in order; the
    last one of each job records the row as it is now and happened at its ``updated_at``;
    and the whole log still replays to the table (I2-I4)."""
    logged = await list_events(db, ALL_MERCHANTS, EventFilter(after_id=since))
    by_job: dict[str | None, list[Any]] = {}
    for event in logged:
        by_job.setdefault(event.job_id, []).append(event)
    assert {job: [e.type for e in evs] for job, evs in by_job.items()} == {
        job: [e.type for e in want] for job, want in expected.items()
    }
    for job_id, want in expected.items():
        row = await job_row(db, job_id)
        for event, spec in zip(by_job[job_id], want, strict=True):
            assert (event.actor, event.merchant_id) == (spec.actor, row["merchant_id"])
            data = dict(event.data)
            assert data.pop("from", None) == (spec.came_from and spec.came_from.value)
            assert data.pop("to") == spec.to.value
            changes = data.pop("changes")
            assert set(changes) == spec.changes
            assert changes["status"] == spec.to.value
            assert data == dict(spec.extra)
        last = by_job[job_id][-1]
        assert last.data["changes"] == {k: jsonable(row[k]) for k in last.data["changes"]}
        assert last.occurred_at == row["updated_at"]
    await check_invariants(db)


async def _snapshot(db: Database) -> list[list[dict[str, Any]]]:
    tables = (
        (jobs, jobs.c.id),
        (events, events.c.id),
        (job_runs, job_runs.c.job_id, job_runs.c.attempt),
        (job_dependencies, job_dependencies.c.job_id, job_dependencies.c.depends_on_job_id),
    )
    async with db.read() as conn:
        return [
            [dict(r._mapping) for r in (await conn.execute(select(t).order_by(*by))).all()]
            for t, *by in tables
        ]


@asynccontextmanager
async def unchanged(db: Database) -> AsyncIterator[None]:
    """The block writes nothing: every job row (``updated_at`` included), event, run and
    dependency is as before. The fence check: a stale writer changes 0 rows."""
    before = await _snapshot(db)
    yield
    assert await _snapshot(db) == before


def assert_at(db: Database, moment: datetime, *stamps: datetime | None) -> None:
    """Each of ``stamps`` is ``moment``: a transition's timestamps are one instant, on
    every writer (the database clock is read once per statement on both backends)."""
    for stamp in stamps:
        assert stamp is not None
        assert stamp == moment


async def expire(db: Database, job_id: str, *, dead_worker: bool) -> None:
    """The watcher's round after ``w1``'s lease lapsed, or after ``w1`` was found dead."""
    if dead_worker:
        await workers.register(db, "w1", "host", 1, ["default"], 1)
        assert await workers.mark_dead(db, silent_for_seconds=-1) == ["w1"]
    else:
        assert await claims.renew_leases(db, "w1", [(job_id, 1)], -1) == {job_id}
    await claims.expire_leases(db, limit=10, actor="watcher")


# -- stale writers: what the fence must stop -------------------------------------------

STALE = ("other_worker", "old_attempt", "cancelled", "finished")
"""A write by: a worker that never held the claim; the holder of an attempt rescued and
claimed again by another worker; the holder of a job cancelled meanwhile; the holder
again, after its own outcome (a duplicate delivery)."""


async def stale_attempt(db: Database, kind: str, job_id: str) -> outcomes.Attempt:
    """Make worker ``w1``'s claim on running ``job_id`` (attempt 1) stale as ``kind``
    says; return the attempt to write with."""
    held = outcomes.Attempt(job_id, 1, "w1")
    if kind == "other_worker":
        return outcomes.Attempt(job_id, 1, "w2")
    if kind == "old_attempt":  # w1 is found dead, its job rescued and claimed by w2
        await workers.register(db, "w1", "host", 1, ["default"], 1)
        assert await workers.mark_dead(db, silent_for_seconds=-1) == ["w1"]
        rescued = await claims.expire_leases(db, limit=10, actor="watcher")
        assert [j.id for j in rescued.rescued] == [job_id]
        due = datetime.now(UTC) + timedelta(minutes=1)
        await claims.enqueue_due(db, now=due, limit=10, actor="populator")
        [again] = await claims.claim(db, claim_params("w2"))
        assert (again.id, again.attempt) == (job_id, 2)
    elif kind == "cancelled":
        await outcomes.cancel(db, job_id, reason="stop", actor="user", merchant_id=ALL_MERCHANTS)
    else:
        assert await outcomes.succeed(db, held, "first")
    return held
