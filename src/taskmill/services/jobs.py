"""The jobs service: every operation on jobs and templates, for every door.

The library (:class:`~taskmill.app.Taskmill`), the REST API (through
:class:`~taskmill.services.tenant.TenantScope`) and the CLI call these methods with the
merchant they act for (:data:`~taskmill.core.tenants.ALL_MERCHANTS` only on operator
paths) and the actor to record. The service sends the wake-up each change needs — the
queue populator for a job that became due, the recurrence manager for a changed template,
the executor running a cancelled job — whichever door called, so a job created or
cancelled through the API is as prompt as one created through the library.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.errors import NotFound, ValidationError
from taskmill.core.events import Event, EventFilter
from taskmill.core.jobs import Job, JobFilter, JobRun, JobStatus
from taskmill.core.queues import QueuePause, check_queue_name
from taskmill.core.templates import FirePreview, Template
from taskmill.core.tenants import MerchantScope
from taskmill.services.scheduling import Scheduled, Scheduler, ScheduleRequest
from taskmill.services.templates import Templates, TemplateUpdate
from taskmill.store.protocol import (
    MAX_QUEUES,
    STATS_WINDOW_MINUTES,
    Declared,
    MerchantStats,
    QueueDepth,
    Store,
    SystemStats,
    WorkerInfo,
)

__all__ = ["STATS_WINDOW_MINUTES", "Jobs", "Wakeups"]


class Wakeups(Protocol):
    """Whom to wake after a change, in this process and (on PostgreSQL) in the others."""

    def jobs_due(self) -> None:
        """A job became due or may soon (the queue populator)."""
        ...

    def templates_changed(self) -> None:
        """A template was created or changed (the recurrence manager)."""
        ...

    def job_cancelled(self, job_id: str, reason: str) -> None:
        """``job_id`` was cancelled: the executor running it stops its handler."""
        ...


@dataclass(frozen=True, slots=True)
class Jobs:
    """Jobs and templates, each call for one merchant (or, on operator paths, all)."""

    store: Store
    clock: Clock
    scheduler: Scheduler
    templates: Templates
    wakeups: Wakeups

    # -- creating ---------------------------------------------------------------------

    async def schedule(self, req: ScheduleRequest) -> Scheduled:
        """Create a job or a template for ``req.merchant_id``, acting as ``req.actor``."""
        scheduled = await self.scheduler.schedule(req)
        item = scheduled.item
        if isinstance(item, Template):
            self.wakeups.templates_changed()
        elif scheduled.created and item.status is JobStatus.SCHEDULED:
            self.wakeups.jobs_due()  # a job created queued was announced already
        return scheduled

    async def declare(
        self, reqs: Sequence[ScheduleRequest], *, retire: Collection[str] | None
    ) -> builtins.list[Declared]:
        """Reconcile recurring schedules declared in code (``Scheduler.declare``)."""
        declared = await self.scheduler.declare(reqs, retire=retire)
        if retire is not None or any(d.outcome != "unchanged" for d in declared):
            self.wakeups.templates_changed()
        return declared

    async def schedule_many(self, reqs: Sequence[ScheduleRequest]) -> builtins.list[Job]:
        """Create jobs in one transaction: all or none."""
        made = await self.scheduler.schedule_many(reqs)
        if any(job.status is JobStatus.SCHEDULED for job in made):
            self.wakeups.jobs_due()
        return made

    # -- jobs -------------------------------------------------------------------------

    async def get(self, merchant_id: MerchantScope, job_id: str) -> Job:
        return await self.store.get_job(merchant_id, job_id)

    async def waiting_reason(self, job: Job) -> str | None:
        """Why ``job`` will not start, if taskmill can tell: its queue is paused, or it is
        queued and no live worker runs its task type (``None`` otherwise)."""
        if job.status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and job.queue in {
            p.name for p in await self.store.paused_queues()
        }:
            return f"queue {job.queue!r} is paused: its jobs wait until it is resumed"
        if job.status is not JobStatus.QUEUED:
            return None
        served = await self.store.live_task_types()
        if served is None or job.task_type in served:
            return None
        return f"no live worker runs task type {job.task_type!r}: it waits until one does"

    async def list(self, merchant_id: MerchantScope, flt: JobFilter) -> builtins.list[Job]:
        return await self.store.list_jobs(merchant_id, flt)

    async def cancel(
        self, merchant_id: MerchantScope, job_id: str, *, reason: str, actor: str
    ) -> Job:
        """Cancel a scheduled, queued or running job; a running handler is stopped."""
        job = await self.store.cancel(merchant_id, job_id, reason=reason, actor=actor)
        self.wakeups.job_cancelled(job.id, reason)
        return job

    async def retry(self, merchant_id: MerchantScope, job_id: str, *, actor: str) -> Job:
        """Give a ``failed`` job one more attempt, now."""
        job = await self.store.retry_failed(
            merchant_id, job_id, actor=actor, run_at=self.clock.now()
        )
        self.wakeups.jobs_due()
        return job

    async def runs(self, merchant_id: MerchantScope, job_id: str) -> builtins.list[JobRun]:
        await self.get(merchant_id, job_id)  # NotFound for another merchant's job
        return await self.store.list_runs(merchant_id, job_id)

    async def dependencies(self, merchant_id: MerchantScope, job_id: str) -> JobDependencies:
        return await self.store.get_dependencies(merchant_id, job_id)

    async def events(self, merchant_id: MerchantScope, flt: EventFilter) -> builtins.list[Event]:
        return await self.store.list_events(merchant_id, flt)

    async def stats(self, merchant_id: str) -> MerchantStats:
        """One merchant's jobs now, over the last hour, and their start lag."""
        return await self.store.merchant_stats(merchant_id, now=self.clock.now())

    async def system_stats(self) -> SystemStats:
        """Every merchant's jobs, for the operator's metrics."""
        return await self.store.system_stats(now=self.clock.now())

    async def workers(self) -> builtins.list[WorkerInfo]:
        """Workers are shared infrastructure: every tenant sees them (no tenant data)."""
        return await self.store.list_workers()

    # -- queues -----------------------------------------------------------------------

    async def pause_queue(self, name: str, *, merchant_id: str, actor: str) -> QueuePause:
        """Pause ``name`` for every executor: its jobs stay queued (or scheduled) and
        running ones finish; executors notice within a second. Pausing twice is one pause."""
        check_queue_name(name, "name")
        return await self.store.pause_queue(
            name, merchant_id=merchant_id, actor=actor, now=self.clock.now()
        )

    async def resume_queue(self, name: str, *, merchant_id: str, actor: str) -> bool:
        """Resume ``name``; ``False`` if it was not paused."""
        check_queue_name(name, "name")
        return await self.store.resume_queue(
            name, merchant_id=merchant_id, actor=actor, now=self.clock.now()
        )

    async def paused_queues(self) -> builtins.list[QueuePause]:
        return await self.store.paused_queues()

    async def queue_depths(self, limit: int = MAX_QUEUES) -> builtins.list[QueueDepth]:
        """Every merchant's queues (operators only: counts over all tenants) with their
        unfinished jobs and live workers, by name, at most ``limit`` (1-1000)."""
        if not 1 <= limit <= MAX_QUEUES:
            raise ValidationError("limit", f"must be between 1 and {MAX_QUEUES}")
        return await self.store.queue_depths(limit=limit)

    # -- templates --------------------------------------------------------------------

    async def list_templates(
        self,
        merchant_id: MerchantScope,
        *,
        limit: int | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> builtins.list[Template]:
        return await self.store.list_templates(merchant_id, limit=limit, after=after)

    async def get_template(self, merchant_id: MerchantScope, template_id: str) -> Template:
        return await self.store.get_template(merchant_id, template_id)

    async def update_template(
        self, merchant_id: MerchantScope, template_id: str, update: TemplateUpdate, *, actor: str
    ) -> Template:
        template = await self.templates.update(
            template_id, update, actor=actor, merchant_id=merchant_id
        )
        self.wakeups.templates_changed()
        return template

    async def switch_off_template(
        self, merchant_id: MerchantScope, template_id: str, reason: str, *, actor: str
    ) -> Template:
        """Switch a template off without evaluating its schedule, ``reason`` as its
        ``last_error`` (an administrator stopping a broken or flooding template)."""
        return await self.templates.switch_off(
            template_id, reason, actor=actor, merchant_id=merchant_id
        )

    async def delete_template(
        self, merchant_id: MerchantScope, template_id: str, *, actor: str
    ) -> None:
        await self.store.delete_template(
            merchant_id, template_id, actor=actor, now=self.clock.now()
        )

    async def preview(
        self, merchant_id: MerchantScope, template_id: str, count: int
    ) -> builtins.list[FirePreview]:
        return await self.templates.preview(template_id, count, merchant_id=merchant_id)

    # -- the caller's own names (seed 003) ---------------------------------------------

    async def template_id(self, merchant_id: str, ident: str) -> str:
        """The id of the merchant's template whose id or name is ``ident``."""
        return await self.store.find_template_id(merchant_id, ident)

    async def job_id(self, merchant_id: str, ident: str) -> str:
        """The id of the merchant's job whose id or idempotency key is ``ident``."""
        return await self.store.find_job_id(merchant_id, ident)

    async def resolve(self, merchant_id: str, ident: str) -> str:
        """A job's or template's id, from its id, a template's name or a job's
        idempotency key (ids first, then templates, then jobs)."""
        found = await self.template_id(merchant_id, ident)
        if found == ident:
            found = await self.store.find_job_id(merchant_id, ident)
        return found

    async def get_any(self, merchant_id: MerchantScope, ident: str) -> Job | Template:
        """The job or else the template with this id."""
        try:
            return await self.get(merchant_id, ident)
        except NotFound:
            return await self.get_template(merchant_id, ident)
