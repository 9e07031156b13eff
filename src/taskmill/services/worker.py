"""The worker (``taskmill executor``): claims jobs, runs them, records outcomes, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from taskmill.brokers.base import Broker, Delivery
from taskmill.core.clock import Clock
from taskmill.core.errors import (
    BrokerError,
    Fail,
    Retry,
    StoreError,
    TaskmillError,
    TimedOut,
    ValidationError,
)
from taskmill.core.failpoints import failpoint
from taskmill.core.jobs import Job, RunOutcome
from taskmill.core.retry import BackoffPolicy
from taskmill.core.text import check_json, unstorable
from taskmill.executors.context import TaskContext
from taskmill.executors.python import PythonExecutor
from taskmill.observability import metrics, tracing
from taskmill.services.group_commit import GroupCommitter
from taskmill.services.loop import unless_stopped
from taskmill.services.progress import ProgressReporter
from taskmill.store.protocol import (
    Attempt,
    ClaimParams,
    Failure,
    Store,
    Success,
    nothing_to_claim,
)

log = logging.getLogger(__name__)

# How stale a worker's list of paused queues may be: a pause (or a resume) reaches every
# executor and replica within this, for one small read per second per executor.
PAUSED_QUEUES_REFRESH_SECONDS = 1.0
# The same for the task types another executor declared a rate limit for.
RATE_LIMITS_REFRESH_SECONDS = 1.0
# An error message is stored in the job's row, its run and its event: an exception's
# text may quote a whole response or payload.
MAX_ERROR_CHARS = 8000
# A lone surrogate in a result's string, as json.dumps escapes it (a pair, an emoji, is
# escaped the same way, and then passes the exact check).
_ESCAPED_SURROGATE = re.compile(r"\\ud[89a-f]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    worker_id: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    poll_interval: float = 1.0
    shutdown_grace_seconds: float = 10.0
    max_result_bytes: int = 1_048_576
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    hostname: str = "localhost"
    pid: int = 0
    max_running_per_merchant: int | None = None


@dataclass(slots=True)
class _Running:
    job: Job
    ctx: TaskContext
    task: asyncio.Task[None]
    lost: bool = False
    recording: bool = False  # the handler returned; its outcome is being written


class Worker:
    """Runs up to ``concurrency`` jobs at once, each under a lease it keeps renewing.

    A job whose lease this worker no longer holds (cancelled, or rescued after a pause)
    is cancelled locally and its outcome is never written: the guarded write would
    change 0 rows anyway.
    """

    name = "executor"

    def __init__(
        self,
        store: Store,
        broker: Broker,
        executor: PythonExecutor,
        clock: Clock,
        config: WorkerConfig,
    ) -> None:
        self.store = store
        self.broker = broker
        self.executor = executor
        self.clock = clock
        self.config = config
        self._running: dict[str, _Running] = {}
        self._commits = GroupCommitter(store)
        self._slot_freed = asyncio.Event()
        self._progress = ProgressReporter(store, clock)
        self._paused: frozenset[str] = frozenset()
        self._paused_read_at = -PAUSED_QUEUES_REFRESH_SECONDS
        # Task types with a stored rate limit (any executor's declaration), read as the
        # paused queues are; their claims take tokens from the database (ADR 0014).
        self._limited: frozenset[str] = frozenset()
        self._limits_read_at = -RATE_LIMITS_REFRESH_SECONDS
        self._rate_wait: float | None = None  # until a limit that held jobs back refills
        #: Called after each outcome is written (callers waiting on jobs in this process).
        self.on_outcome: Callable[[], None] = _nothing

    @property
    def _claims_hinted_ids(self) -> bool:
        """Whether a broker's hints name the jobs to claim. With a per-merchant cap or a
        rate limit the claim must choose among all queued jobs, so hints only wake the
        worker: hints arrive in queue order, and a tenant's backlog (or jobs a limit holds
        back) would sit in front of everyone else's."""
        return (
            self.broker.carries_ids
            and self.config.max_running_per_merchant is None
            and not self._limited
        )

    # -- claiming -------------------------------------------------------------

    def free_slots(self) -> int:
        return self.config.concurrency - len(self._running)

    def _claimable(self) -> tuple[list[str], int]:
        """Task types with a free slot, and how many jobs one claim may take."""
        limit = self.free_slots()
        active = Counter(r.job.task_type for r in self._running.values())
        types = []
        for definition in self.executor.registry:
            if definition.concurrency is None:
                types.append(definition.name)
                continue
            room = definition.concurrency - active[definition.name]
            if room > 0:
                types.append(definition.name)
                # One claim cannot split its limit by type, so never exceed the tightest.
                limit = min(limit, room)
        return types, limit

    async def open_queues(self) -> tuple[str, ...]:
        """This worker's queues that are not paused, from a list at most
        ``PAUSED_QUEUES_REFRESH_SECONDS`` old (the last one read if the store fails)."""
        now = time.monotonic()
        if now - self._paused_read_at >= PAUSED_QUEUES_REFRESH_SECONDS:
            try:
                paused = frozenset(p.name for p in await self.store.paused_queues())
            except StoreError as exc:
                log.warning("could not read the paused queues, keeping the last list: %s", exc)
            else:
                if paused != self._paused:
                    log.info("paused queues: %s", ", ".join(sorted(paused)) or "none")
                self._paused, self._paused_read_at = paused, now
        return tuple(q for q in self.config.queues if q not in self._paused)

    async def refresh_rate_limits(self) -> frozenset[str]:
        """This worker's task types that have a stored rate limit, from a list at most
        ``RATE_LIMITS_REFRESH_SECONDS`` old (the last one read if the store fails)."""
        now = time.monotonic()
        if now - self._limits_read_at >= RATE_LIMITS_REFRESH_SECONDS:
            try:
                stored = await self.store.rate_limits(self.executor.registry.names())
            except StoreError as exc:
                log.warning("could not read the rate limits, keeping the last list: %s", exc)
            else:
                limited = frozenset(stored)
                if limited != self._limited:
                    log.info("rate-limited task types: %s", ", ".join(sorted(limited)) or "none")
                self._limited, self._limits_read_at = limited, now
        return self._limited

    async def declare_rate_limits(self) -> None:
        """Store this worker's rate limits (the last executor to start wins: ADR 0014)."""
        declared = {d.name: d.rate_limit for d in self.executor.registry}
        changes = await self.store.declare_rate_limits(
            declared, worker_id=self.config.worker_id, now=self.clock.now()
        )
        for change in changes:
            # Undoing another executor's declaration is worth a warning (ADR 0014).
            log.log(logging.WARNING if change.replaced else logging.INFO, "%s", change.text)
        self._limits_read_at = -RATE_LIMITS_REFRESH_SECONDS  # read them again at once

    async def run_once(self, job_ids: Sequence[str] | None = None) -> int:
        """Claim as many jobs as there are free slots and start them; return how many."""
        return len(await self._claim_and_start(job_ids))

    async def _claim_and_start(self, job_ids: Sequence[str] | None) -> list[Job]:
        limited = await self.refresh_rate_limits()
        task_types, limit = self._claimable()
        params = ClaimParams(
            worker_id=self.config.worker_id,
            limit=limit,
            lease_seconds=self.config.lease_seconds,
            queues=await self.open_queues(),
            task_types=task_types,
            job_ids=job_ids,
            max_running_per_merchant=self.config.max_running_per_merchant,
        )
        if limited.intersection(task_types) and not nothing_to_claim(params):
            # Any queued job of the worker's types may be taken, not only hinted ones.
            outcome = await self.store.claim_rate_limited(replace(params, job_ids=None))
            claimed, self._rate_wait = outcome.jobs, outcome.retry_after
        else:
            claimed = await self.store.claim(params)
        for job in claimed:
            self._start(job)
        return claimed

    def _start(self, job: Job) -> None:
        extra = {"job_id": job.id, "attempt": job.attempt, "merchant_id": job.merchant_id}
        ctx = TaskContext(
            job_id=job.id,
            task_type=job.task_type,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            merchant_id=job.merchant_id,
            logger=logging.LoggerAdapter(
                logging.getLogger(f"taskmill.task.{job.task_type}"), extra
            ),
            _progress=self._progress.report,
            _upstream=self.store.upstream_results,
            _loop=asyncio.get_running_loop(),
        )
        task = asyncio.create_task(self._execute(job, ctx), name=f"job-{job.id}")
        self._running[job.id] = _Running(job, ctx, task)
        metrics.job_started(job)
        task.add_done_callback(functools.partial(self._finished, job.id))

    def _finished(self, job_id: str, _task: object = None) -> None:
        self._running.pop(job_id, None)
        metrics.slot_freed()
        self._slot_freed.set()

    # -- executing ------------------------------------------------------------

    async def _execute(self, job: Job, ctx: TaskContext) -> None:
        attempt = Attempt(job.id, job.attempt, self.config.worker_id)
        started = time.monotonic()
        deadline = asyncio.timeout(job.timeout_seconds)
        attributes = {"taskmill.job_id": job.id, "taskmill.attempt": job.attempt}
        try:
            with tracing.span(f"run {job.task_type}", job.trace_context, attributes):
                async with deadline:
                    result = await self.executor.execute(job.task_type, ctx, job.payload)
        except asyncio.CancelledError:
            running = self._running.get(job.id)
            if running is not None and running.lost:
                ctx.logger.warning("lost lease (cancelled or rescued): stopped the handler")
                return
            raise  # shutdown: the runner releases the job
        except TimeoutError:
            if not deadline.expired():
                raise
            ctx.cancel("timeout")
            error = f"timed out after {job.timeout_seconds}s"
            failure = self._failure(job, error, started, outcome=RunOutcome.TIMED_OUT)
            await self._record(self._failed(attempt, failure), ctx)
        except TimedOut as exc:
            error = f"{type(exc).__name__}: {exc}"
            failure = self._failure(job, error, started, outcome=RunOutcome.TIMED_OUT)
            await self._record(self._failed(attempt, failure), ctx)
        except Retry as retry:
            failure = self._failure(job, retry.reason, started, delay=retry.delay)
            await self._record(self._failed(attempt, failure), ctx)
        except Fail as fail:
            failure = self._failure(job, fail.reason, started, final=True)
            await self._record(self._failed(attempt, failure), ctx)
        except Exception as exc:
            failure = self._failure(job, f"{type(exc).__name__}: {exc}", started)
            await self._record(self._failed(attempt, failure), ctx)
        else:
            await self._record_result(job, attempt, ctx, result, started)

    async def _record_result(
        self, job: Job, attempt: Attempt, ctx: TaskContext, result: Any, started: float
    ) -> None:
        """Record what the handler returned: a success, or a failure if it cannot be stored
        (not JSON, larger than ``max_result_bytes``, text no database takes)."""
        refused = _unstorable(result, self.config.max_result_bytes)
        if refused is not None:
            failure = self._failure(job, refused, started)
            await self._record(self._failed(attempt, failure), ctx)
            return
        failpoint("executor.after_handler_before_outcome_commit", f"{job.id}:{job.attempt}")
        duration = time.monotonic() - started
        metrics.job_succeeded(job, duration)
        await self._record(self._succeeded(attempt, result, duration), ctx)

    def _succeeded(self, attempt: Attempt, result: Any, duration: float) -> Any:
        return self._commits.succeed(Success(attempt, result, duration))

    def _failed(self, attempt: Attempt, failure: Failure) -> Any:
        return self._commits.fail(attempt, failure)

    def _failure(
        self,
        job: Job,
        error: str,
        started: float,
        delay: float | None = None,
        outcome: RunOutcome = RunOutcome.FAILED,
        *,
        final: bool = False,
    ) -> Failure:
        """The failure to record; ``final`` (the handler raised ``Fail``): no retry. The
        error is logged and stored as :func:`stored_error` makes it (a lone surrogate
        in a log line fails the handler that writes it)."""
        error = stored_error(error)
        retry_at = None
        if job.attempt < job.max_attempts and not final:
            backoff = self.executor.registry.get(job.task_type).backoff or self.config.backoff
            seconds = delay if delay is not None else backoff.delay(job.attempt)
            retry_at = self.clock.now() + timedelta(seconds=seconds)
        metrics.job_failed(job, outcome, time.monotonic() - started, retrying=retry_at is not None)
        extra = {"job_id": job.id, "attempt": job.attempt, "merchant_id": job.merchant_id}
        if retry_at is not None:
            then = f"retrying at {retry_at.isoformat()}"
        elif final and job.attempt < job.max_attempts:
            then = "not retried (the handler raised Fail)"
        else:
            then = "no retries left"
        level = logging.WARNING if retry_at is None else logging.INFO
        log.log(
            level,
            "attempt %d/%d failed, %s: %s",
            job.attempt,
            job.max_attempts,
            then,
            error,
            extra=extra,
        )
        return Failure(error, outcome, retry_at, time.monotonic() - started)

    async def _record(self, write: Any, ctx: TaskContext) -> None:
        running = self._running.get(ctx.job_id)
        if running is not None:
            # From here a lost lease must not cancel us mid-write: the guarded write
            # itself finds out (0 rows) and says so.
            running.recording = True
        try:
            if not await write:
                ctx.logger.warning(
                    "lost lease: outcome not recorded (the job was rescued or cancelled)"
                )
            self.on_outcome()
        except TaskmillError as exc:
            # The lease will expire and the job run again: at-least-once, never lost.
            ctx.logger.error("could not record the outcome: %s", exc)

    # -- leases ---------------------------------------------------------------

    async def heartbeat(self) -> int:
        """Renew every held lease; cancel the jobs no longer ours. Return how many were lost."""
        held = [(r.job.id, r.job.attempt) for r in self._running.values()]
        owned = await self.store.renew_leases(
            self.config.worker_id, held, self.config.lease_seconds
        )
        if not await self.store.worker_beat(self.config.worker_id):
            # Silent long enough for retention to prune its row (a machine suspended for
            # days): listed again, so the registry, the UI and /workers see it.
            log.warning("worker %s had no row (pruned): registering again", self.config.worker_id)
            await self._register()
        lost = [job_id for job_id, _ in held if job_id not in owned]
        for job_id in lost:
            self.notify_lost(job_id, "lease lost (cancelled or rescued)")
        return len(lost)

    def notify_lost(self, job_id: str, reason: str) -> None:
        """Stop the local run of ``job_id`` (it was cancelled or taken over)."""
        running = self._running.get(job_id)
        # Once only: a cancel reaches this process twice (the jobs service's in-process
        # call, then the cancel's wake-up from the database), and a second cancel of
        # the task would interrupt its clean-up (a process job's group being killed).
        if running is None or running.task.done() or running.lost:
            return
        running.lost = True
        running.ctx.cancel(reason)
        if not running.recording:
            running.task.cancel()

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            try:
                await self.heartbeat()
            except StoreError as exc:
                log.warning("heartbeat failed, will retry: %s", exc)

    # -- the loop -------------------------------------------------------------

    async def _register(self) -> None:
        await self.store.register_worker(
            self.config.worker_id,
            self.config.hostname,
            self.config.pid,
            self.config.queues,
            self.config.concurrency,
            self.executor.registry.names(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until ``stop``; then finish or release what is running."""
        await self._register()
        await self.declare_rate_limits()
        for definition in self.executor.registry:
            if definition.on_worker_start is not None:
                definition.on_worker_start()
        metrics.EXECUTOR_SLOTS.set(self.config.concurrency)
        log.info(
            "worker %s started: queues=%s concurrency=%d tasks=%s",
            self.config.worker_id,
            ",".join(self.config.queues),
            self.config.concurrency,
            ",".join(self.executor.registry.names()) or "none",
        )
        beating = asyncio.create_task(self._heartbeat_forever(), name="heartbeat")
        reporting = asyncio.create_task(self._progress.run_forever(), name="progress")
        try:
            await self._claim_loop(stop)
        finally:
            beating.cancel()
            reporting.cancel()
            await self.shutdown()
            with contextlib.suppress(StoreError):
                await self._progress.flush()  # the last reports of the jobs just finished
            await self.store.stop_worker(self.config.worker_id)
            log.info("worker %s stopped", self.config.worker_id)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        more = True  # the last claim was full, so queued work may remain
        while not stop.is_set():
            if self.free_slots() <= 0:
                self._slot_freed.clear()
                await unless_stopped(self._slot_freed.wait(), stop)
                continue
            try:
                more = await self._receive_and_claim(stop, more)
            except (StoreError, BrokerError) as exc:
                log.warning("claim failed, retrying: %s", exc)
                await unless_stopped(asyncio.sleep(self.config.poll_interval), stop)
                more = False

    async def _receive_and_claim(self, stop: asyncio.Event, more: bool) -> bool:
        """One round: wait for hints (unless work is known to remain), claim, settle the
        hints. Returns whether the claim was full (so more work may be waiting)."""
        free = self.free_slots()
        queues = await self.open_queues()
        if not queues:  # every queue paused: look again when the list is next read
            await unless_stopped(asyncio.sleep(PAUSED_QUEUES_REFRESH_SECONDS), stop)
            return False
        await self.refresh_rate_limits()
        hinted = self._claims_hinted_ids
        deliveries: list[Delivery] = []
        if not more or hinted:
            # A paused queue's hints stay in the broker until it is resumed. A rate
            # limit that held jobs back has the worker look again when it refills.
            timeout = self.config.poll_interval
            if self._rate_wait is not None:
                timeout, self._rate_wait = min(timeout, self._rate_wait), None
            received = await unless_stopped(self.broker.receive(queues, free, timeout), stop)
            deliveries = received or []
            if not deliveries and hinted:
                return False
        ids = _hinted_ids(deliveries) if hinted else None
        _, limit = self._claimable()
        try:
            claimed = await self._claim_and_start(ids)
        except StoreError:
            # Hand the hints back: left unsettled they would fill the broker's prefetch
            # window (RabbitMQ) and this worker would receive nothing more.
            await self._give_back(deliveries)
            raise
        await self._settle(deliveries, {job.id for job in claimed}, limit, hinted=hinted)
        return len(claimed) >= min(free, limit) and bool(claimed)

    async def _settle(
        self, deliveries: list[Delivery], claimed: set[str], limit: int, *, hinted: bool
    ) -> None:
        """Ack hints after the claim committed. If the claim stopped at this worker's
        limit, the unclaimed hints go back for other workers; otherwise they were stale
        (job no longer queued, or unknown) and are dropped. Hints that only woke the
        worker (no ids, a per-merchant cap or a rate limit) are simply acked."""
        if not deliveries or not self.broker.carries_ids:
            return
        if not hinted:
            await self.broker.ack(deliveries)
            return
        taken = [d for d in deliveries if d.job_id in claimed]
        rest = [d for d in deliveries if d.job_id not in claimed]
        await self.broker.ack(taken)
        if len(claimed) >= limit and rest:
            await self.broker.nack(rest)
        else:
            if rest:
                log.info("dropped %d stale hints (jobs no longer queued)", len(rest))
            await self.broker.ack(rest)

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        if not deliveries or not self.broker.carries_ids:
            return
        try:
            await self.broker.nack(deliveries)
        except BrokerError as exc:  # they come back when the broker drops this consumer
            log.warning("could not hand %d hints back: %s", len(deliveries), exc)

    async def drain(self) -> None:
        """Wait for every running job to finish and its outcome to be committed."""
        while self._running:
            await asyncio.wait([r.task for r in self._running.values()])
        await self._commits.flush()

    async def shutdown(self) -> None:
        """Give running jobs the grace period, then cancel and release the rest."""
        tasks = [r.task for r in self._running.values()]
        if tasks:
            grace = self.config.shutdown_grace_seconds
            log.info("waiting up to %ss for %d running jobs", grace, len(tasks))
            await asyncio.wait(tasks, timeout=self.config.shutdown_grace_seconds)
        leftovers = list(self._running.values())
        for running in leftovers:
            running.ctx.cancel("worker shutting down")
            running.task.cancel()
        await asyncio.gather(*(r.task for r in leftovers), return_exceptions=True)
        await self._commits.close()  # outcomes of jobs that finished are written first
        for running in leftovers:
            attempt = Attempt(running.job.id, running.job.attempt, self.config.worker_id)
            try:
                if await self.store.release(attempt):
                    running.ctx.logger.info("released at shutdown")
            except StoreError as exc:
                running.ctx.logger.error("could not release (the lease will expire): %s", exc)
        self.executor.close()


def _nothing() -> None:
    pass


def _unstorable(result: Any, max_bytes: int) -> str | None:
    """Why ``result`` cannot be stored, or ``None`` if it can: a handler returning, say,
    a set (results are JSON) or 50 MB fails its attempt with that reason rather than
    leaving the job running until its lease expires, or filling every read of it."""
    try:
        # PostgreSQL's JSON has no NaN or Infinity. ASCII only: a character is a byte.
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"result is not JSON: {exc}"
    except RecursionError:
        return "result is not JSON: nested too deeply"
    if len(text) > max_bytes:
        return (
            f"result is {len(text):,} bytes of JSON, more than worker.max_result_bytes "
            f"({max_bytes:,}); store large outputs elsewhere and return a reference"
        )
    if "\\u0000" in text or _ESCAPED_SURROGATE.search(text):  # else no string can fail
        try:
            check_json("result", result)
        except ValidationError as exc:
            return f"result cannot be stored: {exc}"
    return None


def stored_error(text: str) -> str:
    """An error message as it can be stored: NUL and lone surrogates (an exception's text
    may hold anything the handler read) escaped, and at most ``MAX_ERROR_CHARS``, its
    start and end kept, so that recording the failure can itself never fail."""
    if unstorable(text) is not None:
        text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
    if len(text) > MAX_ERROR_CHARS:
        cut = len(text) - MAX_ERROR_CHARS
        half = MAX_ERROR_CHARS // 2
        text = f"{text[:half]} [... {cut:,} characters cut ...] {text[-half:]}"
    return text


def _hinted_ids(deliveries: Sequence[Delivery]) -> list[str] | None:
    """The job ids to claim, or ``None`` to claim any due work (a database-broker hint)."""
    if any(d.job_id is None for d in deliveries):
        return None
    return [d.job_id for d in deliveries if d.job_id is not None]
