"""The history checker of RELIABILITY.md: invariants I1-I5 over a finished (or paused) run.

Call :func:`check_history` after every fault scenario. It reads only the database (the
``jobs`` projection, the ``events`` log, ``job_runs``) and, for I5, the ``effects`` side
table that the ``record_effect`` test handler (``tests/fixtures/apps.py``) writes on its
own connection *before* doing its work, so an execution is counted even when its outcome
commit is lost. Each invariant is also available alone (``*_violations``), for checks
after every step of a state machine (S33).

- **I1** no job stuck: none ``queued`` longer than ``queued_grace_s``, none ``running``
  more than ``running_grace_s`` past its lease, none ``scheduled`` and due (dependencies
  met, no overlap-queue template) longer than ``queued_grace_s``; judged on the database
  clock. Jobs waiting for a future ``run_at`` (backoff) are fine.
- **I2** at most one terminal event per job per attempt cycle (a manual ``job.retried``
  re-opens a failed job and starts a new cycle); at most one ``job_runs`` row, so one
  outcome, per ``(job_id, attempt)``.
- **I3** each job's events are a path of the state machine (``core/jobs.py``): starts
  with ``job.created``, each event's type matches its target status, its ``from`` is
  the status before it, every step is an allowed transition, and the attempt of each
  ``job.started`` is higher than the one before (no attempt claimed twice).
- **I4** replaying the event log rebuilds the ``jobs`` table (``projection_diff``).
- **I5** executions per job <= 1 + injected faults that hit it + the re-runs the history
  itself asks for (``job.retry_scheduled``, ``job.released``, ``job.retried`` events);
  and at most one execution per ``(job_id, attempt)``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    func,
    inspect,
    or_,
    select,
)

from taskmill.core.events import EventType
from taskmill.core.jobs import JobStatus, can_transition
from taskmill.core.templates import OverlapPolicy
from taskmill.store.database import Database
from taskmill.store.dependencies import dependencies_met
from taskmill.store.replay import projection_diff
from taskmill.store.schema import events, job_runs, jobs, templates

_effects_metadata = MetaData()

effects = Table(
    "effects",
    _effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(36), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("worker_pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
"""One row per execution of a ``record_effect`` handler (not part of taskmill's schema)."""

# The status each job event moves a job to (job.created: the first, scheduled).
EVENT_TARGETS: dict[str, JobStatus] = {
    EventType.JOB_CREATED: JobStatus.SCHEDULED,
    EventType.JOB_QUEUED: JobStatus.QUEUED,
    EventType.JOB_STARTED: JobStatus.RUNNING,
    EventType.JOB_SUCCEEDED: JobStatus.SUCCEEDED,
    EventType.JOB_FAILED: JobStatus.FAILED,
    EventType.JOB_RETRY_SCHEDULED: JobStatus.SCHEDULED,
    EventType.JOB_LEASE_EXPIRED: JobStatus.SCHEDULED,
    EventType.JOB_RELEASED: JobStatus.SCHEDULED,
    EventType.JOB_CANCELLED: JobStatus.CANCELLED,
    EventType.JOB_RETRIED: JobStatus.SCHEDULED,
}
TERMINAL_EVENTS = frozenset(
    {EventType.JOB_SUCCEEDED, EventType.JOB_FAILED, EventType.JOB_CANCELLED}
)
# Re-runs the history itself asks for; anything else beyond one execution is a fault's.
PLANNED_RERUNS = frozenset(
    {EventType.JOB_RETRY_SCHEDULED, EventType.JOB_RELEASED, EventType.JOB_RETRIED}
)
_SHOWN = 20  # violations listed per invariant in a failure message


async def create_effects_table(db: Database) -> None:
    """Create the ``effects`` side table (idempotent); ``record_effect`` writes into it
    from then on, in every process using this database."""
    async with db.transaction() as conn:
        await conn.run_sync(_effects_metadata.create_all)


async def has_effects_table(db: Database) -> bool:
    async with db.read() as conn:
        found: bool = await conn.run_sync(lambda sync: inspect(sync).has_table("effects"))
    return found


async def executions(db: Database) -> list[tuple[str, int, int]]:
    """``(job_id, attempt, worker_pid)`` of every recorded execution, in order."""
    stmt = select(effects.c.job_id, effects.c.attempt, effects.c.worker_pid).order_by(effects.c.id)
    async with db.read() as conn:
        return [(r.job_id, r.attempt, r.worker_pid) for r in (await conn.execute(stmt)).all()]


async def _job_events(db: Database) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    stmt = (
        select(events.c.job_id, events.c.type, events.c.data)
        .where(events.c.job_id.is_not(None), events.c.type.like("job.%"))
        .order_by(events.c.id)
    )
    by_job: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    async with db.read() as conn:
        for job_id, kind, data in (await conn.execute(stmt)).all():
            by_job[job_id].append((kind, data))
    return by_job


async def stuck_violations(
    db: Database, *, queued_grace_s: float, running_grace_s: float
) -> list[str]:
    """I1, on the database clock."""
    now = db.dialect.db_now
    overlap_queue = select(templates.c.id).where(
        templates.c.overlap_policy == OverlapPolicy.QUEUE.value
    )
    checks = [
        ("queued", jobs.c.status == JobStatus.QUEUED, jobs.c.queued_at < now(-queued_grace_s)),
        (
            "running past its lease",
            jobs.c.status == JobStatus.RUNNING,
            jobs.c.lease_expires_at < now(-running_grace_s),
        ),
        (
            "scheduled, due and not queued",
            jobs.c.status == JobStatus.SCHEDULED,
            (jobs.c.run_at < now(-queued_grace_s))
            & dependencies_met()
            & or_(jobs.c.template_id.is_(None), jobs.c.template_id.not_in(overlap_queue)),
        ),
    ]
    found: list[str] = []
    async with db.read() as conn:
        for label, status, late in checks:
            rows = (await conn.execute(select(jobs.c.id).where(status, late))).all()
            found += [f"I1 {row.id}: stuck {label}" for row in rows]
    return found


async def terminal_violations(db: Database) -> list[str]:
    """I2: <= 1 terminal event per attempt cycle; <= 1 outcome per (job_id, attempt)."""
    found: list[str] = []
    for job_id, history in (await _job_events(db)).items():
        in_cycle: list[str] = []
        for kind, _data in history:
            if kind == EventType.JOB_RETRIED:
                in_cycle = []
            elif kind in TERMINAL_EVENTS:
                in_cycle.append(kind)
                if len(in_cycle) == 2:
                    found.append(f"I2 {job_id}: terminal events {in_cycle} in one attempt cycle")
                elif len(in_cycle) > 2:
                    found[-1] = f"I2 {job_id}: terminal events {in_cycle} in one attempt cycle"
    stmt = (
        select(job_runs.c.job_id, job_runs.c.attempt, func.count())
        .group_by(job_runs.c.job_id, job_runs.c.attempt)
        .having(func.count() > 1)
    )
    async with db.read() as conn:
        for job_id, attempt, count in (await conn.execute(stmt)).all():
            found.append(f"I2 {job_id}: {count} runs (outcomes) for attempt {attempt}")
    return found


def _path_violation(history: list[tuple[str, dict[str, Any]]]) -> str | None:
    """Why ``history`` is not a path of the state machine, or ``None``."""
    status: JobStatus | None = None
    last_attempt = 0
    for i, (kind, data) in enumerate(history):
        target = EVENT_TARGETS.get(kind)
        if target is None:
            return f"event #{i} has unknown type {kind!r}"
        if (i == 0) != (kind == EventType.JOB_CREATED):
            return f"event #{i} is {kind}; job.created must come first and only once"
        if data.get("to") != target.value:
            return f"event #{i} {kind} says to={data.get('to')!r}, expected {target.value!r}"
        if status is not None:
            if data.get("from") != status.value:
                return f"event #{i} {kind} says from={data.get('from')!r} but job was {status}"
            if not can_transition(status, target):
                return f"event #{i} {kind}: {status} -> {target} is not a transition"
        if kind == EventType.JOB_STARTED:
            attempt = data.get("changes", {}).get("attempt", 0)
            if attempt <= last_attempt:
                return f"event #{i} job.started attempt {attempt} after attempt {last_attempt}"
            last_attempt = attempt
        status = target
    return None


async def path_violations(db: Database) -> list[str]:
    """I3: each job's events form a path of the state machine."""
    found = []
    for job_id, history in (await _job_events(db)).items():
        why = _path_violation(history)
        if why is not None:
            kinds = " ".join(kind.removeprefix("job.") for kind, _ in history)
            found.append(f"I3 {job_id}: {why} (events: {kinds})")
    return found


async def projection_violations(db: Database) -> list[str]:
    """I4: the replayed event log equals the ``jobs`` table."""
    return [f"I4 {diff}" for diff in await projection_diff(db)]


async def execution_violations(
    db: Database, faults_per_job: Mapping[str, int] | None = None
) -> list[str]:
    """I5, from the ``effects`` side table."""
    faults = faults_per_job or {}
    done = await executions(db)
    per_job = Counter(job_id for job_id, _, _ in done)
    per_attempt = Counter((job_id, attempt) for job_id, attempt, _ in done)
    found = [
        f"I5 {job_id}: attempt {attempt} executed {n} times"
        for (job_id, attempt), n in per_attempt.items()
        if n > 1
    ]
    history = await _job_events(db)
    for job_id, n in per_job.items():
        planned = sum(1 for kind, _ in history.get(job_id, []) if kind in PLANNED_RERUNS)
        allowed = 1 + faults.get(job_id, 0) + planned
        if n > allowed:
            found.append(
                f"I5 {job_id}: executed {n} times, allowed {allowed} "
                f"(1 + {faults.get(job_id, 0)} faults + {planned} planned re-runs)"
            )
    return found


async def history_violations(
    db: Database,
    *,
    faults_per_job: Mapping[str, int] | None = None,
    queued_grace_s: float,
    running_grace_s: float,
) -> list[str]:
    """Every violation of I1-I5. I5 runs when the ``effects`` table exists (it must, if
    ``faults_per_job`` is given)."""
    found = await stuck_violations(
        db, queued_grace_s=queued_grace_s, running_grace_s=running_grace_s
    )
    found += await terminal_violations(db)
    found += await path_violations(db)
    found += await projection_violations(db)
    if await has_effects_table(db):
        found += await execution_violations(db, faults_per_job)
    elif faults_per_job is not None:
        found.append("I5: faults_per_job given but there is no effects table to count in")
    return found


def report(found: list[str]) -> str:
    """A failure message: the count per invariant, then the first offenders of each."""
    by_invariant: dict[str, list[str]] = defaultdict(list)
    for line in found:
        by_invariant[line.split(" ", 1)[0].rstrip(":")].append(line)
    lines = [f"history checker: {len(found)} violations"]
    for name in sorted(by_invariant):
        listed = by_invariant[name]
        lines.append(f"{name}: {len(listed)}")
        lines += [f"  {line}" for line in listed[:_SHOWN]]
        if len(listed) > _SHOWN:
            lines.append(f"  ... and {len(listed) - _SHOWN} more")
    return "\n".join(lines)


async def check_history(
    db: Database,
    *,
    faults_per_job: Mapping[str, int] | None = None,
    queued_grace_s: float,
    running_grace_s: float,
) -> None:
    """Assert I1-I5 (see the module docstring); the message lists the offending job ids."""
    found = await history_violations(
        db,
        faults_per_job=faults_per_job,
        queued_grace_s=queued_grace_s,
        running_grace_s=running_grace_s,
    )
    assert not found, report(found)


async def check_invariants(db: Database) -> None:
    """Assert I2-I4 only: for a history paused mid-run (jobs may legitimately be held)."""
    found = await terminal_violations(db)
    found += await path_violations(db)
    found += await projection_violations(db)
    assert not found, report(found)
