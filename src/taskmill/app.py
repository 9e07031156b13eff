"""The library facade (seed 003 in Python idiom): ``Taskmill``."""

from __future__ import annotations

import asyncio
import builtins
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from taskmill.config import Settings, load_settings
from taskmill.core.canvas import Canvas, Chain, Group, plan
from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.errors import ConfigError, NotFound, ValidationError
from taskmill.core.events import Event, EventFilter, EventType
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, DependencyFailurePolicy, Job, JobFilter, JobRun
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause
from taskmill.core.rate_limits import parse_rate_limit
from taskmill.core.retry import BackoffPolicy
from taskmill.core.templates import (
    FirePreview,
    JobFailurePolicy,
    MisfirePolicy,
    OverlapPolicy,
    Template,
)
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.executors.python import TaskDefinition, TaskRegistry, Validator
from taskmill.observability.logs import configure_logging, redact_url
from taskmill.runtime import Runtime
from taskmill.services.event_handlers import Subscription
from taskmill.services.runner import ServiceMain
from taskmill.services.scheduling import ScheduleRequest
from taskmill.services.templates import TemplateUpdate

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
MAX_DELAY_SECONDS = 366 * 86400.0  # as the API's delay_seconds
_ACTOR = "library"  # the actor the event log names for what the library does
ServicesFactory = Callable[[Runtime], dict[str, ServiceMain]]


H = TypeVar("H", bound=Callable[[Event], Any])


def _event_type(value: EventType | str) -> EventType:
    try:
        return EventType(value)
    except ValueError:
        raise ValidationError("types", f"{value!r} is not an event type") from None


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
        self._periodic: builtins.list[tuple[Callable[..., Any], ScheduleRequest]] = []
        self._subscriptions: builtins.list[Subscription] = []
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
        rate_limit: str | None = None,
        rate_burst: int | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function (``fn(ctx, payload)``, sync or async) as ``name``.

        ``max_retries`` retries after the first attempt (default from config);
        ``concurrency`` caps this task's parallel runs per worker process;
        ``rate_limit`` (``"10/s"``, ``"30/m"``, ``"100/h"``) caps its job starts across
        every executor, at most ``rate_burst`` (default 1) at once: jobs over the limit
        stay queued (``docs/howto/chains-and-rate-limits.md``).
        """
        if rate_limit is None and rate_burst is not None:
            raise ValidationError("rate_burst", "needs a rate_limit")
        limit = None if rate_limit is None else parse_rate_limit(rate_limit, rate_burst)

        def register(fn: F) -> F:
            self.registry.add(
                TaskDefinition(
                    name=name,
                    handler=fn,
                    max_attempts=None if max_retries is None else max_retries + 1,
                    timeout_seconds=timeout,
                    concurrency=concurrency,
                    backoff=backoff,
                    validator=validate,
                    queue=queue,
                    priority=priority,
                    rate_limit=limit,
                )
            )
            return fn

        return register

    def periodic(
        self,
        *,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        timezone: str = "UTC",
        name: str | None = None,
        payload: Any = None,
        task: str | None = None,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE,
        overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW,
        on_job_failure: JobFailurePolicy | str = JobFailurePolicy.KEEP,
    ) -> Callable[[F], F]:
        """Run the decorated task (``@app.task``, above or below this) on ``cron`` or every
        ``interval`` seconds, declared in code. Every start reconciles the app's
        declarations with the stored templates, by ``name`` (one derived from the
        definition without it): the same definition keeps its template, a changed one
        updates it (its next fire from now, an event recording the change), and a
        template this app once declared for one of its tasks and no longer declares is
        switched off (by an app that declares at least one schedule: a producer or a
        script declaring none leaves them alone). ``task`` names the task when the
        function is not one."""
        if (cron is None) == (interval is None):
            raise ValidationError("cron", "give exactly one of cron and interval")
        request = ScheduleRequest(
            task=task or "",
            payload=payload,
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
            misfire_policy=misfire_policy,
            overlap_policy=overlap_policy,
            on_job_failure=on_job_failure,
            actor=_ACTOR,
        )

        def declare(fn: F) -> F:
            self._periodic.append((fn, request))
            return fn

        return declare

    def on_event(self, *types: EventType | str, name: str | None = None) -> Callable[[H], H]:
        """Call the decorated function (``fn(event)``, sync or async) for each event of
        ``types`` (every event without types) from the event log, after its commit, at
        least once: it reads from a cursor kept in the database, so none is missed across
        a restart or a crash (one may come twice). It runs in every process of the app
        that registers it, one process at a time (a lease). A failing call is retried
        with backoff, then the event is logged and passed over. The first start reads
        from the log's end. ``name`` keys the cursor (default: the function's module and
        name): keep it when renaming the function."""
        wanted = tuple(_event_type(t) for t in types)

        def register(fn: H) -> H:
            key = name or f"{fn.__module__}.{fn.__qualname__}"
            if not 1 <= len(key) <= 200:
                raise ValidationError("name", "must be 1-200 characters")
            if any(s.name == key for s in self._subscriptions):
                raise ValidationError("name", f"an event handler named {key!r} exists")
            subscription = Subscription(key, wanted, fn)
            self._subscriptions.append(subscription)
            if self._runtime is not None:
                self._runtime.subscriptions.append(subscription)
            return fn

        return register

    def _declared(self) -> builtins.list[ScheduleRequest]:
        """The ``@periodic`` declarations, each with its task's name."""
        by_handler = {id(d.handler): d.name for d in self.registry}
        declared = []
        for fn, request in self._periodic:
            task = request.task or by_handler.get(id(fn))
            if task is None:
                raise ConfigError(
                    f"@periodic on {getattr(fn, '__name__', fn)!r}, which is not a task: "
                    "decorate it with @app.task too, or pass task="
                )
            declared.append(replace(request, task=task))
        return declared

    # -- lifecycle ------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(self.settings, self.registry, self._clock)
            self._runtime.subscriptions.extend(self._subscriptions)
        return self._runtime

    async def open(self) -> Runtime:
        """Connect and migrate (idempotent); called by every operation that needs the store."""
        runtime = self.runtime
        if not self._opened:
            await runtime.open()
            # An app declaring schedules owns the declared templates of its tasks; one
            # declaring none (a producer, a script) leaves them alone.
            retire = [d.name for d in self.registry] if self._periodic else None
            declared = await runtime.jobs.declare(self._declared(), retire=retire)
            changed = [
                f"{d.template.name} {d.outcome}" for d in declared if d.outcome != "unchanged"
            ]
            if changed:
                log.info("periodic schedules: %s", ", ".join(changed))
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
        on_job_failure: JobFailurePolicy | str = JobFailurePolicy.KEEP,
        unique_key: str | None = None,
        connection: object | None = None,
    ) -> Job | Template:
        """Schedule ``task``: now (default), at ``run_at`` or after ``delay``, every
        ``interval`` seconds, or on a ``cron`` expression (5 fields, or 6 with seconds
        first) in ``timezone``. Immediate and one-time requests return a :class:`Job`;
        interval and cron requests return the :class:`Template` that creates jobs, declared
        in code: the same call at the next start finds the same template (by ``name``, or
        one derived from the definition without it), and a named one whose definition
        changed is updated (its next fire from now, an event recording the change).

        ``depends_on`` holds the job until those jobs succeeded; if one fails or is
        cancelled, ``on_dependency_failure`` says whether this job is cancelled too
        (``"cancel"``, default) or runs once all of them finished (``"run"``).

        ``unique_key``: while a job with this key is scheduled, queued or running, the
        call returns that job instead of creating another (``docs/howto/producers.md``).
        ``connection``: your SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on this
        database; the job is written in your transaction and exists if and only if you
        commit it."""
        runtime = await self.open()
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
            if not 0 <= seconds <= MAX_DELAY_SECONDS:  # NaN fails too
                raise ValidationError("delay", f"must be between 0 and {MAX_DELAY_SECONDS:.0f} s")
            run_at = runtime.clock.now() + timedelta(seconds=seconds)
        request = ScheduleRequest(
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
            on_job_failure=on_job_failure,
            unique_key=unique_key,
            connection=connection,
        )
        if interval is not None or cron is not None:
            # Declared in code: the same call at every start finds its template again.
            [declared] = await runtime.jobs.declare([request], retire=None)
            return declared.template
        return (await runtime.jobs.schedule(request)).item

    async def schedule_many(
        self,
        task: str,
        payloads: Sequence[Any],
        *,
        run_at: datetime | None = None,
        unique_keys: Sequence[str | None] | None = None,
        connection: object | None = None,
    ) -> builtins.list[Job]:
        """Schedule ``task`` once per payload, now or at ``run_at``, in one transaction:
        much faster than one ``schedule`` call each. All payloads are validated first;
        if one is invalid, none is stored. ``unique_keys``: one per payload (or ``None``),
        as ``schedule``'s ``unique_key``: a payload whose key is held answers with the
        job holding it. ``connection``: as ``schedule``'s."""
        runtime = await self.open()
        keys = [None] * len(payloads) if unique_keys is None else list(unique_keys)
        if len(keys) != len(payloads):
            raise ValidationError("unique_keys", "must hold one key (or None) per payload")
        return await runtime.jobs.schedule_many(
            [
                ScheduleRequest(task=task, payload=p, run_at=run_at, unique_key=k)
                for p, k in zip(payloads, keys, strict=True)
            ],
            connection=connection,
        )

    async def chain(self, *steps: Canvas) -> builtins.list[Job]:
        """Schedule ``steps`` (each a :class:`Signature`, a :class:`Group` or a nested
        :class:`Chain`) to run one after another, in one transaction: all, or nothing
        if any is invalid. Each step waits on the whole step before it, under its
        ``on_dependency_failure`` (``"cancel"``: a failure stops the chain). The jobs in
        creation order; a handler reads what the steps before it returned with
        ``await ctx.upstream_results()``."""
        return await (await self.open()).jobs.schedule_graph(plan(Chain(*steps)))

    async def group(self, *members: Canvas) -> builtins.list[Job]:
        """Schedule ``members`` to run side by side, in one transaction (all or
        nothing); the jobs in the order given. Put the group in a :meth:`chain` for a
        step that waits on every member (Celery's chord)."""
        return await (await self.open()).jobs.schedule_graph(plan(Group(*members)))

    async def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """The job once it finished (succeeded, failed or cancelled: read its ``result``
        or ``last_error``); ``TimeoutError`` if it has not within ``timeout`` seconds
        (0-3600). Every caller waiting in this process shares one watcher, woken when a
        job finishes (``docs/howto/producers.md``)."""
        runtime = await self.open()
        return await runtime.waiters.wait(ALL_MERCHANTS, job_id, timeout)

    # The library is the operator's door: it reads and cancels every merchant's jobs
    # (ALL_MERCHANTS), creates the default merchant's, and finds names among the
    # default merchant's (seed 003's ids are the caller's own).

    async def cancel(self, ident: str, reason: str = "cancelled") -> Job | Template:
        """Cancel a job (scheduled, queued or running), or switch a template off; ``ident``
        is an id, a template's name or a job's idempotency key (``app.cancel("daily-report")``)."""
        jobs = (await self.open()).jobs
        ident = await jobs.resolve(DEFAULT_MERCHANT_ID, ident)
        try:
            return await jobs.cancel(ALL_MERCHANTS, ident, reason=reason, actor=_ACTOR)
        except NotFound:
            off = TemplateUpdate(active=False)
            return await jobs.update_template(ALL_MERCHANTS, ident, off, actor=_ACTOR)

    async def get(self, ident: str) -> Job | Template:
        """The job or template with this id, template name or job idempotency key, or
        :class:`~taskmill.core.errors.NotFound`."""
        jobs = (await self.open()).jobs
        return await jobs.get_any(ALL_MERCHANTS, await jobs.resolve(DEFAULT_MERCHANT_ID, ident))

    async def list(self, flt: JobFilter | None = None) -> builtins.list[Job]:
        """Jobs matching ``flt`` (all, oldest first, by default)."""
        return await (await self.open()).jobs.list(ALL_MERCHANTS, flt or JobFilter())

    async def templates(self) -> builtins.list[Template]:
        return await (await self.open()).jobs.list_templates(ALL_MERCHANTS)

    async def update_template(self, template_id: str, update: TemplateUpdate) -> Template:
        """Change a template (schedule, payload, policies, ``active``)."""
        jobs = (await self.open()).jobs
        return await jobs.update_template(ALL_MERCHANTS, template_id, update, actor=_ACTOR)

    async def preview(self, template_id: str, count: int = 10) -> builtins.list[FirePreview]:
        """The template's next ``count`` fire times, DST-affected ones flagged."""
        return await (await self.open()).jobs.preview(ALL_MERCHANTS, template_id, count)

    async def dependencies(self, job_id: str) -> JobDependencies:
        """The jobs ``job_id`` waits on (``upstream``) and those waiting on it
        (``downstream``), each with its status and task type."""
        return await (await self.open()).jobs.dependencies(ALL_MERCHANTS, job_id)

    async def progress(self, job_id: str) -> Progress | None:
        """What the job's current attempt last reported with ``ctx.progress`` (``None``
        before its first report)."""
        return await (await self.open()).jobs.progress(ALL_MERCHANTS, job_id)

    async def runs(self, job_id: str) -> builtins.list[JobRun]:
        """Every attempt of a job."""
        return await (await self.open()).jobs.runs(ALL_MERCHANTS, job_id)

    async def events(self, job_id: str | None = None) -> builtins.list[Event]:
        """The event log, optionally for one job."""
        return await (await self.open()).jobs.events(ALL_MERCHANTS, EventFilter(job_id=job_id))

    async def retry(self, job_id: str) -> Job:
        """Give a failed job one more attempt, now."""
        return await (await self.open()).jobs.retry(ALL_MERCHANTS, job_id, actor=_ACTOR)

    async def pause_queue(self, name: str) -> QueuePause:
        """Pause queue ``name`` for every executor of this database (within a second): its
        jobs stay queued or scheduled, running ones finish. Survives restarts."""
        jobs = (await self.open()).jobs
        return await jobs.pause_queue(name, merchant_id=DEFAULT_MERCHANT_ID, actor=_ACTOR)

    async def resume_queue(self, name: str) -> bool:
        """Resume queue ``name``; ``False`` if it was not paused."""
        jobs = (await self.open()).jobs
        return await jobs.resume_queue(name, merchant_id=DEFAULT_MERCHANT_ID, actor=_ACTOR)

    async def paused_queues(self) -> builtins.list[QueuePause]:
        return await (await self.open()).jobs.paused_queues()
