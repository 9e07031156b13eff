"""The library facade (seed 003 in Python idiom): ``Taskmill``."""

from __future__ import annotations

import asyncio
import builtins
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from taskmill.config import Settings, load_settings
from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.errors import NotFound
from taskmill.core.events import Event
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, DependencyFailurePolicy, Job, JobRun, JobStatus
from taskmill.core.retry import BackoffPolicy
from taskmill.core.templates import FirePreview, MisfirePolicy, OverlapPolicy, Template
from taskmill.executors.python import TaskDefinition, TaskRegistry, Validator
from taskmill.observability.logs import configure_logging, redact_url
from taskmill.runtime import Runtime
from taskmill.services.runner import ServiceMain
from taskmill.services.scheduling import ScheduleRequest
from taskmill.services.templates import TemplateUpdate
from taskmill.store import dependencies as dependency_store
from taskmill.store import events as event_store
from taskmill.store import jobs as job_store
from taskmill.store import names, outcomes
from taskmill.store import runs as run_store
from taskmill.store import templates as template_store
from taskmill.store.events import EventFilter
from taskmill.store.jobs import JobFilter

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
ServicesFactory = Callable[[Runtime], dict[str, ServiceMain]]


class Taskmill:
    """An embedded scheduler: register tasks, schedule them, run the services.

    Example::

        app = Taskmill(database_url="sqlite:///taskmill.db")

        @app.task("send_email", max_retries=3, timeout=30)
        async def send_email(ctx, payload):
            ...

        await app.schedule("send_email", {"to": "a@example.com"})
        app.run()
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        environment: str | None = None,
    ) -> None:
        if settings is None:
            overrides: dict[str, object] = {}
            if database_url:
                overrides["database"] = {"url": database_url}
            settings = load_settings(environment, None, **overrides)
        elif database_url is not None:
            settings = settings.model_copy(
                update={"database": settings.database.model_copy(update={"url": database_url})}
            )
        self.settings = settings
        self.registry = TaskRegistry()
        self._clock = clock
        self._runtime: Runtime | None = None
        self._opened = False
        self._stop: asyncio.Event | None = None
        self._serving: asyncio.Task[None] | None = None

    # -- registration ---------------------------------------------------------

    def task(
        self,
        name: str,
        *,
        max_retries: int | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        backoff: BackoffPolicy | None = None,
        validate: Validator | None = None,
        queue: str = "default",
        priority: int = 0,
    ) -> Callable[[F], F]:
        """Register the decorated function (``fn(ctx, payload)``, sync or async) as ``name``.

        ``max_retries`` retries after the first attempt (default from config);
        ``concurrency`` caps this task's parallel runs per worker process.
        """
        retries = self.settings.tasks.max_retries if max_retries is None else max_retries

        def register(fn: F) -> F:
            self.registry.add(
                TaskDefinition(
                    name=name,
                    handler=fn,
                    max_attempts=retries + 1,
                    timeout_seconds=timeout,
                    concurrency=concurrency,
                    backoff=backoff,
                    validator=validate,
                    queue=queue,
                    priority=priority,
                )
            )
            return fn

        return register

    # -- lifecycle ------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings, self.registry, self._clock)
        return self._runtime

    async def open(self) -> Runtime:
        """Connect and migrate (idempotent); called by every operation that needs the store."""
        runtime = self.runtime
        if not self._opened:
            await runtime.open()
            self._opened = True
        return runtime

    async def start(self) -> None:
        """Start every service in the background of the running event loop."""
        runtime = await self.open()
        self._stop = asyncio.Event()
        self._serving = asyncio.create_task(runtime.run(self._stop), name="taskmill")

    async def stop(self) -> None:
        """Stop the services (running jobs get the grace period), then close connections."""
        if self._stop is not None and self._serving is not None:
            self._stop.set()
            await self._serving
        self._stop, self._serving = None, None
        if self._runtime is not None:
            await self._runtime.close()
        self._runtime, self._opened = None, False

    async def serve(self, stop: asyncio.Event, services: ServicesFactory | None = None) -> None:
        """Run every service (or those ``services`` picks) until ``stop`` is set."""
        runtime = await self.open()
        try:
            await runtime.run(stop, services(runtime) if services else None)
        finally:
            await self.stop()

    def run(self, services: ServicesFactory | None = None) -> None:
        """Run until SIGINT or SIGTERM (blocking): the embedded ``taskmill run``.

        ``services`` picks what runs from the runtime (default: every service).
        """
        configure_logging(self.settings.logging.level, self.settings.logging.format)
        asyncio.run(self._run_until_signal(services))

    async def _run_until_signal(self, services: ServicesFactory | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "taskmill starting on %s; stop with Ctrl-C", redact_url(self.settings.database.url)
        )
        await self.serve(stop, services)

    # -- operations -----------------------------------------------------------

    async def schedule(
        self,
        task: str,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        interval: float | timedelta | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        name: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        depends_on: Sequence[str] = (),
        on_dependency_failure: DependencyFailurePolicy | str = DependencyFailurePolicy.CANCEL,
        misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW,
    ) -> Job | Template:
        """Schedule ``task``: now (default), at ``run_at`` or after ``delay``, every
        ``interval`` seconds, or on a ``cron`` expression (5 fields, or 6 with seconds
        first) in ``timezone``. Immediate and one-time requests return a :class:`Job`;
        interval and cron requests return the :class:`Template` that creates jobs.

        ``depends_on`` holds the job until those jobs succeeded; if one fails or is
        cancelled, ``on_dependency_failure`` says whether this job is cancelled too
        (``"cancel"``, default) or runs once all of them finished (``"run"``)."""
        runtime = await self.open()
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
            run_at = runtime.clock.now() + timedelta(seconds=seconds)
        scheduled = await runtime.scheduler.schedule(
            ScheduleRequest(
                task=task,
                payload=payload,
                run_at=run_at,
                interval=interval,
                cron=cron,
                timezone=timezone,
                name=name,
                start_at=start_at,
                end_at=end_at,
                queue=queue,
                priority=priority,
                max_retries=max_retries,
                timeout=timeout,
                idempotency_key=idempotency_key,
                depends_on=depends_on,
                on_dependency_failure=on_dependency_failure,
                misfire_policy=misfire_policy,
                overlap_policy=overlap_policy,
            )
        )
        result = scheduled.item
        if isinstance(result, Template):
            runtime.wakers.recurrence.wake()
        elif result.status is JobStatus.SCHEDULED:  # a queued one was announced already
            runtime.wakers.populator.wake()
        return result

    async def schedule_many(
        self, task: str, payloads: Sequence[Any], *, run_at: datetime | None = None
    ) -> builtins.list[Job]:
        """Schedule ``task`` once per payload, now or at ``run_at``, in one transaction:
        much faster than one ``schedule`` call each. All payloads are validated first;
        if one is invalid, none is stored."""
        runtime = await self.open()
        jobs = await runtime.scheduler.schedule_many(
            [ScheduleRequest(task=task, payload=p, run_at=run_at) for p in payloads]
        )
        if any(job.status is JobStatus.SCHEDULED for job in jobs):  # queued ones: announced
            runtime.wakers.populator.wake()
        return jobs

    async def _resolve(self, ident: str) -> str:
        """Seed 003: a job or template can be named by its id or by the caller's own name
        (a template's ``name``, a job's ``idempotency_key``), ids first, then templates."""
        runtime = await self.open()
        merchant = DEFAULT_MERCHANT_ID  # the library's schedules are this merchant's
        found = await names.find_template_id(runtime.db, ident, merchant)
        if found == ident:
            found = await names.find_job_id(runtime.db, ident, merchant)
        return found

    async def cancel(self, ident: str, reason: str = "cancelled") -> Job | Template:
        """Cancel a job (scheduled, queued or running), or switch a template off; ``ident``
        is an id, a template's name or a job's idempotency key (``app.cancel("daily-report")``)."""
        runtime = await self.open()
        ident = await self._resolve(ident)
        try:
            job = await outcomes.cancel(runtime.db, ident, reason=reason, actor="library")
        except NotFound:
            off = await runtime.templates.set_active(
                ident, False, actor="library", merchant_id=None
            )
            return off
        runtime.worker.notify_lost(job.id, f"cancelled: {reason}")
        return job

    async def get(self, ident: str) -> Job | Template:
        """The job or template with this id, template name or job idempotency key, or
        :class:`~taskmill.core.errors.NotFound`."""
        runtime = await self.open()
        ident = await self._resolve(ident)
        try:
            return await job_store.get_job(runtime.db, ident)
        except NotFound:
            return await template_store.get_template(runtime.db, ident)

    async def list(self, flt: JobFilter | None = None) -> builtins.list[Job]:
        """Jobs matching ``flt`` (all, oldest first, by default)."""
        runtime = await self.open()
        return await job_store.list_jobs(runtime.db, flt or JobFilter())

    async def templates(self) -> builtins.list[Template]:
        runtime = await self.open()
        return await template_store.list_templates(runtime.db)

    async def update_template(self, template_id: str, update: TemplateUpdate) -> Template:
        """Change a template (schedule, payload, policies, ``active``)."""
        runtime = await self.open()
        template = await runtime.templates.update(
            template_id, update, actor="library", merchant_id=None
        )
        runtime.wakers.recurrence.wake()
        return template

    async def preview(self, template_id: str, count: int = 10) -> builtins.list[FirePreview]:
        """The template's next ``count`` fire times, DST-affected ones flagged."""
        runtime = await self.open()
        return await runtime.templates.preview(template_id, count, merchant_id=None)

    async def dependencies(self, job_id: str) -> JobDependencies:
        """The jobs ``job_id`` waits on (``upstream``) and those waiting on it
        (``downstream``), each with its status and task type."""
        runtime = await self.open()
        return await dependency_store.get_dependencies(runtime.db, job_id)

    async def runs(self, job_id: str) -> builtins.list[JobRun]:
        """Every attempt of a job."""
        runtime = await self.open()
        return await run_store.list_runs(runtime.db, job_id)

    async def events(self, job_id: str | None = None) -> builtins.list[Event]:
        """The event log, optionally for one job."""
        runtime = await self.open()
        return await event_store.list_events(runtime.db, EventFilter(job_id=job_id))

    async def retry(self, job_id: str) -> Job:
        """Give a failed job one more attempt, now."""
        runtime = await self.open()
        job = await outcomes.retry_failed(
            runtime.db, job_id, actor="library", run_at=runtime.clock.now()
        )
        runtime.wakers.populator.wake()
        return job
