"""Job dependencies in SQL: the checks at creation, the readiness predicate the populator
uses, the lookup failure propagation needs, and the reads behind the API.

Failure propagation itself (cancelling waiting dependents when a job fails or is
cancelled) runs inside ``transition()``, which every status change goes through: a new
terminal path cannot forget it. See ``docs/howto/dependencies.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.dependencies import JobDependencies, JobLink
from taskmill.core.errors import NotFound, ValidationError
from taskmill.core.jobs import (
    UNFINISHED_STATUSES,
    DependencyFailurePolicy,
    JobStatus,
)
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.dialect import Dialect
from taskmill.store.schema import job_dependencies, jobs

_upstream = jobs.alias("upstream")

# Upstream statuses that end a dependency without success.
FAILURE_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


def dependencies_met() -> ColumnElement[bool]:
    """For the outer ``jobs`` row: no upstream job still holds it back.

    Policy ``cancel``: every upstream job succeeded. Policy ``run``: every upstream job
    finished, whatever its outcome.
    """
    holding = or_(
        _upstream.c.status.in_(list(UNFINISHED_STATUSES)),
        and_(
            _upstream.c.status != JobStatus.SUCCEEDED,
            jobs.c.on_dependency_failure != DependencyFailurePolicy.RUN.value,
        ),
    )
    pending = (
        select(1)
        .select_from(
            job_dependencies.join(_upstream, _upstream.c.id == job_dependencies.c.depends_on_job_id)
        )
        .where(job_dependencies.c.job_id == jobs.c.id, holding)
    )
    return ~exists(pending)


async def check_upstream(
    conn: AsyncConnection,
    dialect: Dialect,
    merchant_id: str,
    depends_on: Sequence[str],
    policy: DependencyFailurePolicy,
) -> list[str]:
    """The distinct upstream ids of a job about to be created, in the order given.

    Raises ``ValidationError("depends_on", ...)`` for an id that is not one of the
    merchant's jobs (another merchant's job reads exactly like a missing one), and,
    under policy ``cancel``, for an upstream job already failed or cancelled (the new job
    would be cancelled at once). A job cannot name itself: its id does not exist yet.

    On PostgreSQL the upstream rows stay share-locked until the caller commits, so an
    upstream cannot fail between this check and the commit without its propagation
    seeing the new job (it waits for the lock, then finds the committed dependent).
    """
    wanted = list(dict.fromkeys(depends_on))
    if not wanted:
        return []
    for ident in wanted:
        if not isinstance(ident, str) or not ident:
            raise ValidationError("depends_on", "job ids must be non-empty strings")
    stmt = (
        select(jobs.c.id, jobs.c.status)
        .where(jobs.c.id.in_(wanted), jobs.c.merchant_id == merchant_id)
        .order_by(jobs.c.id)
    )
    if dialect.supports_skip_locked:
        stmt = stmt.with_for_update(read=True)
    found = {row.id: JobStatus(row.status) for row in (await conn.execute(stmt)).all()}
    for ident in wanted:
        status = found.get(ident)
        if status is None:
            raise ValidationError("depends_on", f"job {ident} does not exist")
        if status in FAILURE_STATUSES and policy is DependencyFailurePolicy.CANCEL:
            raise ValidationError(
                "depends_on",
                f"job {ident} is {status.value}; with on_dependency_failure 'cancel' this "
                "job would be cancelled at once (use 'run' to run it anyway)",
            )
    return wanted


@dataclass(frozen=True, slots=True)
class Waiting:
    """A ``scheduled`` job waiting on ``upstream_id``, with its failure policy."""

    job_id: str
    upstream_id: str
    policy: DependencyFailurePolicy


async def waiting_dependents(
    conn: AsyncConnection, dialect: Dialect, upstream_ids: Sequence[str]
) -> list[Waiting]:
    """Scheduled jobs that depend on any of ``upstream_ids``, ordered by job then upstream."""
    if not upstream_ids:
        return []
    dependent = jobs.alias("dependent")
    stmt = (
        select(
            job_dependencies.c.job_id,
            job_dependencies.c.depends_on_job_id,
            dependent.c.on_dependency_failure,
        )
        .select_from(job_dependencies.join(dependent, dependent.c.id == job_dependencies.c.job_id))
        .where(
            job_dependencies.c.depends_on_job_id.in_(list(upstream_ids)),
            # Through the primary key: SQLite would otherwise walk every scheduled job.
            dialect.by_key_only(dependent.c.status) == JobStatus.SCHEDULED,
        )
        .order_by(job_dependencies.c.job_id, job_dependencies.c.depends_on_job_id)
    )
    return [
        Waiting(row.job_id, row.depends_on_job_id, DependencyFailurePolicy(row[2]))
        for row in (await conn.execute(stmt)).all()
    ]


async def get_dependencies(
    db: Database, job_id: str, merchant_id: MerchantScope
) -> JobDependencies:
    """``job_id``'s upstream and downstream jobs; ``NotFound`` for another merchant's job."""
    policy = jobs.c.on_dependency_failure
    head = select(jobs.c.id, policy).where(jobs.c.id == job_id)
    if merchant_id is not ALL_MERCHANTS:
        head = head.where(jobs.c.merchant_id == merchant_id)
    link = jobs.alias("link")
    columns = (link.c.id, link.c.status, link.c.task_type)
    upstream = (
        select(*columns)
        .select_from(job_dependencies.join(link, link.c.id == job_dependencies.c.depends_on_job_id))
        .where(job_dependencies.c.job_id == job_id)
        .order_by(link.c.created_at, link.c.id)
    )
    downstream = (
        select(*columns)
        .select_from(job_dependencies.join(link, link.c.id == job_dependencies.c.job_id))
        .where(job_dependencies.c.depends_on_job_id == job_id)
        .order_by(link.c.created_at, link.c.id)
    )
    if merchant_id is not ALL_MERCHANTS:
        upstream = upstream.where(link.c.merchant_id == merchant_id)
        downstream = downstream.where(link.c.merchant_id == merchant_id)
    async with db.read() as conn:
        row = (await conn.execute(head)).first()
        if row is None:
            raise NotFound("job", job_id)
        ups = (await conn.execute(upstream)).all()
        downs = (await conn.execute(downstream)).all()
    return JobDependencies(
        job_id=job_id,
        on_dependency_failure=DependencyFailurePolicy(row[1]),
        upstream=[JobLink(r.id, JobStatus(r.status), r.task_type) for r in ups],
        downstream=[JobLink(r.id, JobStatus(r.status), r.task_type) for r in downs],
    )
