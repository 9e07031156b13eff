"""Instances made ahead (the lookahead, docs/adr/0015-create-ahead-lookahead.md):
withdrawn when their template is paused, edited or deleted.

An instance made ahead is a ``scheduled`` job of a template whose tick has not come.
A change to the template must not let it run as the template was: it is cancelled
(a ``job.cancelled`` event saying why) and its tick released, ``scheduled_for`` set to
NULL, so that the unique ``(template_id, scheduled_for)`` lets the recurrence manager
make that tick's instance again from the template as it now is. Its ``run_at`` still
says which tick it was for.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.jobs import JobStatus
from taskmill.store.dialect import Dialect
from taskmill.store.schema import jobs
from taskmill.store.transition import Transition, transition


async def withdraw_ahead(
    conn: AsyncConnection,
    dialect: Dialect,
    template_id: str,
    *,
    now: datetime,
    actor: str,
    reason: str,
) -> list[datetime]:
    """Cancel the template's instances whose tick is after ``now`` and that are still
    ``scheduled``, in the caller's transaction; return their ticks, earliest first.

    Call it after the change to the template's row: on PostgreSQL that row lock orders
    it after a recurrence manager's round on the template, whose instances it then sees.
    """
    stmt = select(jobs.c.id, jobs.c.scheduled_for).where(
        jobs.c.template_id == template_id,  # the unique (template_id, scheduled_for) index
        jobs.c.scheduled_for > now,
        jobs.c.status == JobStatus.SCHEDULED,
    )
    found = (await conn.execute(stmt)).all()
    if not found:
        return []
    rows = await transition(
        conn,
        dialect,
        Transition(
            job_ids=[row.id for row in found],
            from_statuses=frozenset({JobStatus.SCHEDULED}),
            to_status=JobStatus.CANCELLED,
            event_type=EventType.JOB_CANCELLED,
            actor=actor,
            values={
                "cancel_reason": reason,
                "finished_at": dialect.db_now(),
                "scheduled_for": None,
            },
            data={"reason": reason},
        ),
    )
    return sorted(row.run_at for row in rows)
