"""Use cases: turn a producer's request into a job or a template, validated first.

Nothing is stored unless every check passes: unknown task, invalid payload, conflicting
or malformed schedule arguments all raise ``ValidationError`` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from taskmill.brokers.base import Broker, Message
from taskmill.core.canvas import Plan
from taskmill.core.clock import Clock
from taskmill.core.dependencies import parse_policy
from taskmill.core.errors import BrokerError, QuotaExceeded, ValidationError
from taskmill.core.jobs import (
    DEFAULT_MERCHANT_ID,
    DependencyFailurePolicy,
    Job,
    JobStatus,
    ScheduleType,
    check_job_options,
    check_unique_key,
)
from taskmill.core.queues import check_queue_name
from taskmill.core.schedules import check_schedule_time, utc
from taskmill.core.templates import (
    JobFailurePolicy,
    MisfirePolicy,
    OverlapPolicy,
    Template,
    build_schedule,
    first_tick,
    job_failure_policy,
)
from taskmill.core.text import check_json, check_text
from taskmill.executors.python import TaskRegistry
from taskmill.observability import tracing
from taskmill.services.insert_batcher import InsertBatcher
from taskmill.services.templates import MerchantLimits, check_interval
from taskmill.store.protocol import (
    Declaration,
    Declared,
    NewJob,
    NewTemplate,
    Store,
    fits_batch,
    make_job,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """Everything ``Taskmill.schedule`` accepts; at most one of ``run_at``/``interval``/``cron``."""

    task: str
    payload: Any = None
    run_at: datetime | None = None
    interval: float | timedelta | None = None
    cron: str | None = None
    timezone: str = "UTC"
    name: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    queue: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    depends_on: Sequence[str] = field(default_factory=tuple)
    on_dependency_failure: DependencyFailurePolicy | str = DependencyFailurePolicy.CANCEL
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    on_job_failure: JobFailurePolicy | str = JobFailurePolicy.KEEP
    merchant_id: str = DEFAULT_MERCHANT_ID
    actor: str = "library"
    # While the merchant's job holding this key is unfinished, the request returns it.
    unique_key: str | None = None
    # The caller's SQLAlchemy AsyncConnection or AsyncSession: the job is written in
    # their transaction (store/caller.py).
    connection: object | None = None


@dataclass(frozen=True, slots=True)
class Defaults:
    """Task options used when neither the request nor the task registration sets them."""

    max_retries: int = 3
    timeout_seconds: float | None = 300.0


@dataclass(frozen=True, slots=True)
class Scheduled:
    """What a request produced; ``created`` is ``False`` when an idempotency key or a
    unique key matched."""

    item: Job | Template
    created: bool = True


def check_storable(req: ScheduleRequest, prefix: str = "") -> None:
    """Refuse a string the database cannot store (a lone surrogate, NUL) in any field of
    ``req``, before anything is validated further or written."""
    for name in ("task", "name", "queue", "cron", "timezone", "idempotency_key"):
        check_text(prefix + name, getattr(req, name))
    check_json(prefix + "depends_on", list(req.depends_on))
    check_json(prefix + "payload", req.payload)
    check_unique_key(req.unique_key, prefix + "unique_key")
    if req.unique_key is not None and req.idempotency_key is not None:
        # Two answers to "is this the same job?" would disagree once the first finished
        # (ADR 0013): one or the other.
        raise ValidationError(prefix + "unique_key", "cannot be combined with idempotency_key")


def declared_name(req: ScheduleRequest) -> str:
    """A stable name for a recurring schedule declared without one: the task and a digest
    of what defines the schedule, so the same declaration finds its template again at
    every start (and a changed one makes another)."""
    definition = [
        req.task,
        req.cron,
        _seconds(req.interval),
        req.timezone,
        req.payload,
        req.queue,
        req.priority,
        req.start_at.isoformat() if req.start_at else None,
        req.end_at.isoformat() if req.end_at else None,
        req.max_retries,
        req.timeout,
        str(req.misfire_policy),
        str(req.overlap_policy),
        str(req.on_job_failure),
    ]
    text = json.dumps(definition, sort_keys=True, default=str)
    return f"{req.task[:150]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _seconds(interval: float | timedelta | None) -> float | None:
    return interval.total_seconds() if isinstance(interval, timedelta) else interval


class Scheduler:
    """Validates and stores schedule requests, and announces the jobs ready at once."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        clock: Clock,
        defaults: Defaults,
        broker: Broker,
        limits: MerchantLimits | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.defaults = defaults
        self.broker = broker
        self.limits = limits or MerchantLimits()
        self._batcher = InsertBatcher(store, self.announce)

    async def announce(self, created: Sequence[Job]) -> None:
        """Publish the jobs created (or run now) ``queued`` after their commit, as the
        populator does for the jobs it queues. Only a broker where that is
        cheap and sure to reach the workers (``producers_announce``: Redis) gets jobs
        created queued. A failed publish loses no job: the failure watcher announces jobs
        left queued again."""
        queued = [j for j in created if j.status is JobStatus.QUEUED]
        ready = [Message(j.id, j.queue, j.priority) for j in queued]
        if not ready:
            return
        try:
            await self.broker.publish(ready)
        except BrokerError as exc:
            log.warning(
                "%d queued jobs not announced (the failure watcher will): %s", len(ready), exc
            )

    async def drain(self) -> None:
        """Wait for the jobs being written and announced (before the broker closes)."""
        await self._batcher.drain()

    async def schedule(self, req: ScheduleRequest) -> Scheduled:
        """A job for immediate/one-time requests, a template for interval/cron ones."""
        self._check(req)
        if req.interval is not None or req.cron is not None:
            return Scheduled(await self._template(req))
        await self._check_pending(req.merchant_id, 1)
        return await self._job(req)

    def _check(self, req: ScheduleRequest) -> None:
        """One kind of schedule, storable text, a known task and a payload it accepts."""
        kinds = [k for k in ("run_at", "interval", "cron") if getattr(req, k) is not None]
        if len(kinds) > 1:
            raise ValidationError(kinds[1], f"cannot be combined with {kinds[0]}")
        check_storable(req)
        self.registry.get(req.task).validate(req.payload)
        if req.interval is not None or req.cron is not None:
            given = {
                "depends_on": bool(req.depends_on),
                "unique_key": req.unique_key is not None,
                "connection": req.connection is not None,
            }
            for name in (n for n, present in given.items() if present):
                raise ValidationError(name, "recurring schedules take no " + name)

    async def _check_pending(self, merchant_id: str, adding: int) -> None:
        """Refuse jobs that would take the merchant past its pending-jobs quota (soft:
        requests racing each other may each see room)."""
        cap = self.limits.max_pending_jobs_per_merchant
        if cap is None:
            return
        if await self.store.count_pending_jobs(merchant_id, cap) + adding > cap:
            raise QuotaExceeded("jobs", cap)

    def _options(self, req: ScheduleRequest) -> tuple[int, float | None, str, int]:
        definition = self.registry.get(req.task)
        check_job_options(max_retries=req.max_retries, timeout=req.timeout, priority=req.priority)
        if req.queue is not None:  # "" is refused, not taken for the task's queue
            check_queue_name(req.queue)
        if req.max_retries is not None:
            retries = req.max_retries
        elif definition.max_attempts is not None:
            retries = definition.max_attempts - 1
        else:  # the task leaves it to the configuration
            retries = self.defaults.max_retries
        timeout = req.timeout or definition.timeout_seconds or self.defaults.timeout_seconds
        queue = req.queue or definition.queue
        priority = req.priority if req.priority is not None else definition.priority
        return retries + 1, timeout, queue, priority

    async def schedule_many(
        self, requests: Sequence[ScheduleRequest], *, connection: object | None = None
    ) -> list[Job]:
        """Many immediate or one-time jobs in one transaction (all valid, or none stored);
        with ``connection``, in the caller's. A job whose unique key an unfinished job
        holds is that job, in its place."""
        now = self.clock.now()
        news = []
        for index, req in enumerate(requests):
            if req.interval is not None or req.cron is not None:
                raise ValidationError(f"jobs[{index}]", "recurring schedules are templates")
            check_storable(req, f"jobs[{index}].")
            definition = self.registry.get(req.task)
            definition.validate(req.payload)
            news.append(self._new_job(req, now))
        for merchant_id in {new.merchant_id for new in news}:
            await self._check_pending(merchant_id, sum(n.merchant_id == merchant_id for n in news))
        if connection is not None:
            made = await self.store.create_jobs_on(connection, news, actor="library", now=now)
            return [c.job for c in made]
        created = await self.store.create_jobs(
            news, actor="library", now=now, queue_if_due=self.broker.producers_announce
        )
        await self.announce(created)
        return created

    async def schedule_graph(
        self, flat: Plan, *, merchant_id: str = DEFAULT_MERCHANT_ID, actor: str = "library"
    ) -> list[Job]:
        """A chain or group (``core.canvas.plan``) in one transaction: every signature
        valid, or nothing stored; errors name ``jobs[i].<field>`` (``i`` in creation order)."""
        now = self.clock.now()
        news = []
        for index, sig in enumerate(flat.signatures):
            req = ScheduleRequest(
                task=sig.task,
                payload=sig.payload,
                run_at=sig.run_at,
                queue=sig.queue,
                priority=sig.priority,
                max_retries=sig.max_retries,
                timeout=sig.timeout,
                depends_on=tuple(sig.depends_on),
                on_dependency_failure=sig.on_dependency_failure,
                merchant_id=merchant_id,
                actor=actor,
            )
            try:
                self._check(req)
                news.append(self._new_job(req, now))
            except ValidationError as exc:
                raise ValidationError(f"jobs[{index}].{exc.field}", exc.reason) from None
        await self._check_pending(merchant_id, len(news))
        created = await self.store.create_graph(
            news, flat.links, actor=actor, now=now, queue_if_due=self.broker.producers_announce
        )
        await self.announce(created)
        return created

    def _new_job(self, req: ScheduleRequest, now: datetime) -> NewJob:
        run_at = check_schedule_time(req.run_at, "run_at") if req.run_at is not None else now
        max_attempts, timeout, queue, priority = self._options(req)
        return NewJob(
            task_type=req.task,
            run_at=run_at,
            payload=req.payload,
            schedule_type=ScheduleType.ONE_TIME if req.run_at else ScheduleType.IMMEDIATE,
            merchant_id=req.merchant_id,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=timeout,
            idempotency_key=req.idempotency_key,
            depends_on=tuple(req.depends_on),
            on_dependency_failure=parse_policy(req.on_dependency_failure),
            trace_context=tracing.current_context(),
            unique_key=req.unique_key,
        )

    async def _job(self, req: ScheduleRequest) -> Scheduled:
        now = self.clock.now()
        new = self._new_job(req, now)
        if req.connection is not None:
            # Created scheduled: the populator queues it and sends the hint after the
            # caller's commit (store/caller.py).
            mine = await self.store.create_job_on(req.connection, new, actor=req.actor, now=now)
            return Scheduled(mine.job, mine.created)
        queue_if_due = self.broker.producers_announce
        if fits_batch(new):
            made = make_job(new, now, req.actor, queue_if_due)
            return Scheduled(await self._batcher.insert(made))
        created = await self.store.create_job(
            new, actor=req.actor, now=now, queue_if_due=queue_if_due
        )
        if created.created:
            await self.announce([created.job])
        return Scheduled(created.job, created.created)

    async def _template(self, req: ScheduleRequest) -> Template:
        now = self.clock.now()
        return await self.store.create_template(
            self._new_template(req, now),
            actor=req.actor,
            now=now,
            max_per_merchant=self.limits.max_templates_per_merchant,
        )

    async def declare(
        self, reqs: Sequence[ScheduleRequest], *, retire: Collection[str] | None
    ) -> list[Declared]:
        """Reconcile recurring schedules declared in code with their stored templates, by
        name (one derived from the definition when the request has none): created when
        missing, updated when they differ, left alone when equal (``declare_templates``).
        ``retire``: the task types whose declared templates this set replaces whole, so
        those it no longer names are switched off (``@app.periodic`` at start)."""
        if not reqs and retire is None:
            return []
        now = self.clock.now()
        declarations = []
        for req in reqs:
            if req.interval is None and req.cron is None:
                raise ValidationError("cron", "a declared schedule needs cron or interval")
            self._check(req)
            named = req if req.name else replace(req, name=declared_name(req))
            new = self._new_template(named, now, declared=retire is not None)
            declarations.append(Declaration(new, start_given=req.start_at is not None))
        names = [d.new.name for d in declarations]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValidationError("name", f"declared more than once: {', '.join(twice)}")
        merchants = {req.merchant_id for req in reqs}
        if len(merchants) > 1:
            raise ValueError("one merchant's declarations at a time")  # a programming error
        merchant = merchants.pop() if merchants else DEFAULT_MERCHANT_ID
        return await self.store.declare_templates(
            declarations,
            retire=None if retire is None else (merchant, tuple(retire)),
            actor=reqs[0].actor if reqs else "library",
            now=now,
            max_per_merchant=self.limits.max_templates_per_merchant,
        )

    def _new_template(
        self, req: ScheduleRequest, now: datetime, *, declared: bool = False
    ) -> NewTemplate:
        seconds = req.interval
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        check_interval(seconds, self.limits)
        kind = ScheduleType.CRON if req.cron is not None else ScheduleType.INTERVAL
        start_at = utc(req.start_at) if req.start_at else now
        end_at = utc(req.end_at) if req.end_at else None
        schedule = build_schedule(
            kind,
            cron_expression=req.cron,
            interval_seconds=seconds,
            timezone=req.timezone,
            start_at=start_at,
            end_at=end_at,
        )
        # The first tick at or after now: a past start_at is never backfilled (ADR 0002).
        first = first_tick(schedule, now)
        max_attempts, timeout, queue, priority = self._options(req)
        return NewTemplate(
            name=req.name or f"{req.task}-{uuid.uuid4().hex[:12]}",
            task_type=req.task,
            schedule_type=kind,
            next_run_at=first,
            payload=req.payload,
            merchant_id=req.merchant_id,
            cron_expression=req.cron,
            interval_seconds=seconds,
            timezone=req.timezone,
            start_at=start_at,
            end_at=end_at,
            queue=queue,
            priority=priority,
            misfire_policy=req.misfire_policy,
            overlap_policy=req.overlap_policy,
            on_job_failure=job_failure_policy(req.on_job_failure),
            max_attempts=max_attempts,
            timeout_seconds=timeout,
            declared=declared,
        )
