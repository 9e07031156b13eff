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

from taskmill.core.canvas import Plan, UpstreamResult
from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.errors import InvalidTransition, NotFound, ValidationError
from taskmill.core.events import Event, EventFilter
from taskmill.core.failures import FailureGroup, group_failures
from taskmill.core.jobs import Job, JobFilter, JobRun, JobStatus
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause, check_queue_name
from taskmill.core.templates import FirePreview, JobFailurePolicy, Template
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.services.scheduling import Scheduled, Scheduler, ScheduleRequest
from taskmill.services.templates import ScheduleDraft, Templates, TemplateUpdate
from taskmill.store.protocol import (
    MAX_QUEUE_DEPTHS,
    STATS_WINDOW_MINUTES,
    Declared,
    MerchantStats,
    QueueDepth,
    QueueOverview,
    Store,
    SystemStats,
    WorkerInfo,
    WorkerLoad,
)

__all__ = ["STATS_WINDOW_MINUTES", "BulkOutcome", "Failures", "Jobs", "Wakeups"]

# The failures view groups at most this many of a merchant's newest failed jobs: the
# cost of a read stays bounded whatever the backlog (older failures are not counted).
FAILURES_SCANNED = 5_000
# A group lists at most this many of its jobs' ids (a bulk retry's bound in the UI).
FAILURE_GROUP_IDS = 1_000


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a bulk action did to one id: ``cancelled``/``retried``, ``not_found`` (also
    another merchant's), or ``conflict`` (its status did not allow it); its status after."""

    id: str
    outcome: str
    status: JobStatus | None


@dataclass(frozen=True, slots=True)
class Failures:
    """Failed jobs grouped by error, from the ``scanned`` newest (``bounded``: there may
    be older ones that were not read)."""

    groups: builtins.list[FailureGroup]
    scanned: int
    bounded: bool


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
            self._due(req.connection)  # a job created queued was announced already
        return scheduled

    def _due(self, connection: object | None) -> None:
        """Wake the queue populator for a new job: at once, or when the caller's
        transaction that holds it commits."""
        if connection is None:
            self.wakeups.jobs_due()
        else:
            self.store.after_commit(connection, self.wakeups.jobs_due)

    async def declare(
        self, reqs: Sequence[ScheduleRequest], *, retire: Collection[str] | None
    ) -> builtins.list[Declared]:
        """Reconcile recurring schedules declared in code (``Scheduler.declare``)."""
        declared = await self.scheduler.declare(reqs, retire=retire)
        if retire is not None or any(d.outcome != "unchanged" for d in declared):
            self.wakeups.templates_changed()
        return declared

    async def schedule_many(
        self, reqs: Sequence[ScheduleRequest], *, connection: object | None = None
    ) -> builtins.list[Job]:
        """Create jobs in one transaction (``connection``: the caller's): all or none."""
        made = await self.scheduler.schedule_many(reqs, connection=connection)
        if any(job.status is JobStatus.SCHEDULED for job in made):
            self._due(connection)
        return made

    async def schedule_graph(self, flat: Plan) -> builtins.list[Job]:
        """A chain or group in one transaction: all or none (``Scheduler.schedule_graph``)."""
        made = await self.scheduler.schedule_graph(flat)
        if any(job.status is JobStatus.SCHEDULED for job in made):
            self.wakeups.jobs_due()
        return made

    async def upstream_results(self, job_id: str) -> builtins.list[UpstreamResult]:
        """The jobs ``job_id`` depends on, oldest first, with their results (one read)."""
        return await self.store.upstream_results(job_id)

    # -- jobs -------------------------------------------------------------------------

    async def get(self, merchant_id: MerchantScope, job_id: str) -> Job:
        return await self.store.get_job(merchant_id, job_id)

    async def waiting_reason(self, job: Job) -> str | None:
        """Why ``job`` will not start, if taskmill can tell: its queue is paused, or it is
        queued and no live worker runs its task type, or its task type is rate-limited
        (``None`` otherwise)."""
        if job.status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and job.queue in {
            p.name for p in await self.store.paused_queues()
        }:
            return f"queue {job.queue!r} is paused: its jobs wait until it is resumed"
        if job.status is not JobStatus.QUEUED:
            return None
        served = await self.store.live_task_types()
        if served is not None and job.task_type not in served:
            return f"no live worker runs task type {job.task_type!r}: it waits until one does"
        limited = (await self.store.rate_limits([job.task_type])).get(job.task_type)
        if limited is None:
            return None
        rate, burst = limited.limit.per_second, limited.limit.burst
        return (
            f"task type {job.task_type!r} is rate-limited to {rate:g} a second (burst "
            f"{burst}): its queued jobs start as the limit allows"
        )

    async def progress(self, merchant_id: MerchantScope, job_id: str) -> Progress | None:
        """What the job's current attempt last reported (``ctx.progress``), if anything."""
        return await self.store.get_progress(merchant_id, job_id)

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

    async def cancel_many(
        self, merchant_id: MerchantScope, job_ids: Sequence[str], *, reason: str, actor: str
    ) -> builtins.list[BulkOutcome]:
        """:meth:`cancel` each id in its own transaction: one id's refusal (not found,
        already finished) is its answer and never stops the others."""
        done = []
        for job_id in job_ids:
            try:
                job = await self.cancel(merchant_id, job_id, reason=reason, actor=actor)
            except (NotFound, InvalidTransition) as exc:
                done.append(_refused(job_id, exc))
            else:
                done.append(BulkOutcome(job_id, "cancelled", job.status))
        return done

    async def retry_many(
        self, merchant_id: MerchantScope, job_ids: Sequence[str], *, actor: str
    ) -> builtins.list[BulkOutcome]:
        """:meth:`retry` each id in its own transaction, as :meth:`cancel_many` does."""
        done = []
        for job_id in job_ids:
            try:
                job = await self.store.retry_failed(
                    merchant_id, job_id, actor=actor, run_at=self.clock.now()
                )
            except (NotFound, InvalidTransition) as exc:
                done.append(_refused(job_id, exc))
            else:
                done.append(BulkOutcome(job_id, "retried", job.status))
        if any(d.outcome == "retried" for d in done):
            self.wakeups.jobs_due()
        return done

    async def failures(
        self, merchant_id: MerchantScope, *, since: datetime | None, limit: int
    ) -> Failures:
        """The merchant's newest ``FAILURES_SCANNED`` failed jobs (finished since
        ``since``), grouped by error; the ``limit`` largest groups."""
        failed = await self.store.newest_failed_jobs(
            merchant_id, since=since, limit=FAILURES_SCANNED
        )
        groups = group_failures(failed, max_ids=FAILURE_GROUP_IDS)
        return Failures(groups[:limit], len(failed), len(failed) == FAILURES_SCANNED)

    async def run_now(self, merchant_id: MerchantScope, job_id: str, *, actor: str) -> Job:
        """Queue a ``scheduled`` job now, and wake the workers as for a job created
        queued: the broker hint after the commit (and, on PostgreSQL, the transition's
        ``taskmill_queued`` notification for workers in other processes)."""
        job = await self.store.run_now(merchant_id, job_id, actor=actor, run_at=self.clock.now())
        await self.scheduler.announce([job])
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

    async def queues(self, merchant_id: str) -> QueueOverview:
        """One merchant's queues: depth, due age, running, recent outcomes."""
        return await self.store.queue_stats(merchant_id, now=self.clock.now())

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

    async def running_by_worker(self, merchant_id: MerchantScope) -> dict[str, WorkerLoad]:
        """Per worker, the jobs of ``merchant_id`` it runs now (bounded per worker)."""
        return await self.store.running_by_worker(merchant_id)

    async def queue_depths(self, limit: int = MAX_QUEUE_DEPTHS) -> builtins.list[QueueDepth]:
        """Every merchant's queues (operators only: counts over all tenants) with their
        unfinished jobs and live workers, by name, at most ``limit`` (1-1000)."""
        if not 1 <= limit <= MAX_QUEUE_DEPTHS:
            raise ValidationError("limit", f"must be between 1 and {MAX_QUEUE_DEPTHS}")
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

    async def template_job_failed(self, event: Event) -> None:
        """A job failed for good (``job.failed``): switch its template off if the template
        says ``on_job_failure: disable``, with ``last_error`` saying which job. Runs as an
        event handler (at least once): switching off twice changes nothing."""
        if event.job_id is None:
            return
        try:
            job = await self.store.get_job(ALL_MERCHANTS, event.job_id)
            if job.template_id is None:
                return
            template = await self.store.get_template(ALL_MERCHANTS, job.template_id)
        except NotFound:  # pruned or deleted since: nothing to switch off
            return
        if template.on_job_failure is not JobFailurePolicy.DISABLE or not template.active:
            return
        reason = f"switched off: job {job.id} failed for good (on_job_failure: disable)"
        await self.switch_off_template(ALL_MERCHANTS, template.id, reason, actor="taskmill")

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

    def preview_schedule(self, draft: ScheduleDraft, count: int) -> builtins.list[FirePreview]:
        """The next ``count`` fires of a schedule not stored yet (an edit being typed),
        validated as creating a template validates it. Reads nothing."""
        return self.templates.preview_schedule(draft, count)

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


def _refused(job_id: str, exc: NotFound | InvalidTransition) -> BulkOutcome:
    if isinstance(exc, NotFound):
        return BulkOutcome(job_id, "not_found", None)
    return BulkOutcome(job_id, "conflict", JobStatus(exc.from_status))
