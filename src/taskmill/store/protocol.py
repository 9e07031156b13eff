"""The store as the services see it: one typed interface, one driver per database.

Services depend on :class:`Store` and the records below, never on SQLAlchemy or on a
store module: ``store/sqlite/driver.py`` and ``store/postgres/driver.py`` implement it
(River's driver interface is the model), ``store/drivers.py`` picks one for a URL. Every
method that changes a job's status writes its row(s), its event(s) and, where there is
one, its run in one transaction, fenced by the attempt where a worker acts; the
conformance suite (``tests/conformance/``) runs the same tests on both drivers.

Reads take the merchant they are for: a merchant id, or ``ALL_MERCHANTS`` on operator
paths; there is no default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine, Sequence
from datetime import datetime
from typing import Any, Protocol

from taskmill.core.canvas import UpstreamResult
from taskmill.core.dependencies import JobDependencies
from taskmill.core.events import Event, EventFilter
from taskmill.core.failures import FailedJob
from taskmill.core.jobs import Job, JobFilter, JobRun
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause
from taskmill.core.rate_limits import RateLimit
from taskmill.core.retention import Cutoffs, PruneCounts
from taskmill.core.table_health import TableStats
from taskmill.core.templates import Template
from taskmill.core.tenants import ApiKey, Merchant, MerchantScope
from taskmill.store.claims import ClaimParams, ExpiredLeases, nothing_to_claim
from taskmill.store.jobs import CreatedJob, MadeJob, NewJob, fits_batch, make_job
from taskmill.store.outcomes import Attempt, Failure, Success
from taskmill.store.progress import ProgressReport
from taskmill.store.queue_depths import MAX_QUEUES as MAX_QUEUE_DEPTHS
from taskmill.store.queue_depths import QueueDepth
from taskmill.store.queue_overview import QueueOverview, QueueStats
from taskmill.store.rate_limits import Claimed, LimitChange, StoredLimit
from taskmill.store.stats import WINDOW_MINUTES as STATS_WINDOW_MINUTES
from taskmill.store.stats import MerchantStats, SystemStats
from taskmill.store.templates import Broken, Declaration, Declared, Fire, FireRound, NewTemplate
from taskmill.store.tenants import NewApiKey
from taskmill.store.workers import RunningJob, WorkerInfo, WorkerLoad

__all__ = [
    "MAX_QUEUE_DEPTHS",
    "STATS_WINDOW_MINUTES",
    "ApiKey",
    "Attempt",
    "Broken",
    "ClaimParams",
    "Claimed",
    "CreatedJob",
    "Cutoffs",
    "Declaration",
    "Declared",
    "ExpiredLeases",
    "Failure",
    "Fire",
    "FireRound",
    "LimitChange",
    "MadeJob",
    "Merchant",
    "MerchantStats",
    "NewApiKey",
    "NewJob",
    "NewTemplate",
    "ProgressReport",
    "PruneCounts",
    "QueueDepth",
    "QueueOverview",
    "QueueStats",
    "RunningJob",
    "Store",
    "StoredLimit",
    "Success",
    "SystemStats",
    "UpstreamResult",
    "WorkerInfo",
    "WorkerLoad",
    "fits_batch",
    "make_job",
    "nothing_to_claim",
]

#: Decides, for one due template, what to create (``Fire``), that it is broken, or nothing.
Planner = Callable[[Template], Fire | Broken | None]

#: Listens for other processes' wake-ups on ``channels`` (``store/notify.py``) until
#: ``stop``, calling ``on_notify(channel, payload)`` for each.
WakeupListener = Callable[
    [Sequence[str], Callable[[str, str], None], asyncio.Event], Coroutine[Any, Any, None]
]


class Store(Protocol):
    """Everything the services do with stored jobs, templates, workers and tenants."""

    @property
    def notifies(self) -> bool:
        """Whether changes are announced to every process at commit (``LISTEN``/``NOTIFY``
        on PostgreSQL); without it each process's services poll."""
        ...

    def wakeup_listener(self, listen_url: str | None) -> WakeupListener | None:
        """How this process hears other processes' wake-ups: ``LISTEN`` on
        ``listen_url`` (PostgreSQL; ``None``: unreachable behind a pooler), datagrams
        beside the file (SQLite). ``None``: none reach it, its services poll."""
        ...

    async def close(self) -> None: ...

    # -- creating jobs ----------------------------------------------------------------

    async def insert_jobs(self, made: Sequence[MadeJob]) -> None:
        """Insert jobs built by :func:`make_job` (no dependencies, no idempotency key),
        their events and wake-ups: all or nothing."""
        ...

    async def create_job(
        self, new: NewJob, *, actor: str, now: datetime, queue_if_due: bool
    ) -> CreatedJob:
        """One job with its dependencies and idempotency key; the existing job when the
        key matched. ``queue_if_due``: a due job is created ``queued``."""
        ...

    async def create_jobs(
        self, news: Sequence[NewJob], *, actor: str, now: datetime, queue_if_due: bool
    ) -> list[Job]:
        """Many jobs in one transaction: all or none."""
        ...

    async def create_graph(
        self,
        news: Sequence[NewJob],
        links: Sequence[Sequence[int]],
        *,
        actor: str,
        now: datetime,
        queue_if_due: bool,
    ) -> list[Job]:
        """Jobs with dependencies among them (a chain, a group): ``news[i]`` also waits on
        ``news[j]`` for each ``j`` in ``links[i]`` (``j < i``). One transaction: all or none."""
        ...

    async def upstream_results(self, job_id: str) -> list[UpstreamResult]:
        """The jobs ``job_id`` depends on, oldest first, with their status and result."""
        ...

    async def count_pending_jobs(self, merchant_id: str, limit: int) -> int:
        """The merchant's jobs not yet finished, counted up to ``limit``."""
        ...

    # -- in the caller's transaction (store/caller.py) ---------------------------------

    async def create_job_on(
        self, connection: object, new: NewJob, *, actor: str, now: datetime
    ) -> CreatedJob:
        """:meth:`create_job` in the caller's transaction (``connection``: their
        SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on this database), ``scheduled``:
        it exists if and only if they commit."""
        ...

    async def create_jobs_on(
        self, connection: object, news: Sequence[NewJob], *, actor: str, now: datetime
    ) -> list[CreatedJob]:
        """:meth:`create_jobs` in the caller's transaction."""
        ...

    def after_commit(self, connection: object, callback: Callable[[], None]) -> None:
        """Call ``callback`` when ``connection``'s transaction commits (never on rollback)."""
        ...

    async def finished_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """Those of ``job_ids`` (at most 1,000) that are finished, any merchant's."""
        ...

    # -- status changes ---------------------------------------------------------------

    async def enqueue_due(
        self, *, now: datetime, limit: int, actor: str, merchants_in_turn: bool
    ) -> tuple[list[Job], datetime | None]:
        """``scheduled -> queued`` for up to ``limit`` due jobs, and the next ``run_at``
        still waiting (``None``: the batch was full, or nothing waits)."""
        ...

    async def claim(self, params: ClaimParams) -> list[Job]:
        """``queued -> running`` for a worker: attempt + 1, a lease, a run."""
        ...

    async def claim_rate_limited(self, params: ClaimParams) -> Claimed:
        """:meth:`claim` taking at most each rate-limited task type's tokens (ADR 0014),
        and how long until a limit that held jobs back has a token again."""
        ...

    async def declare_rate_limits(
        self, declared: dict[str, RateLimit | None], *, worker_id: str, now: datetime
    ) -> list[LimitChange]:
        """Store an executor's rate limits per task type (``None``: none); the last
        executor to start wins. Each limit it changed."""
        ...

    async def rate_limits(self, task_types: Sequence[str]) -> dict[str, StoredLimit]:
        """The stored limits of ``task_types`` (unlimited ones absent)."""
        ...

    async def record_outcomes(
        self, successes: Sequence[Success], failures: Sequence[tuple[Attempt, Failure]]
    ) -> tuple[list[bool], list[bool]]:
        """``running -> succeeded`` / ``failed`` / ``scheduled`` (a retry) for a batch,
        in one transaction; ``False`` where the attempt no longer holds its job."""
        ...

    async def release(self, attempt: Attempt) -> bool:
        """``running -> scheduled`` at shutdown, the attempt given back."""
        ...

    async def cancel(
        self, merchant_id: MerchantScope, job_id: str, *, reason: str, actor: str
    ) -> Job: ...

    async def retry_failed(
        self, merchant_id: MerchantScope, job_id: str, *, actor: str, run_at: datetime
    ) -> Job: ...

    async def run_now(
        self, merchant_id: MerchantScope, job_id: str, *, actor: str, run_at: datetime
    ) -> Job:
        """``scheduled -> queued`` at once, ``run_at`` set to the given now, with its
        ``job.queued`` event by ``actor``. ``InvalidTransition`` unless ``scheduled``;
        ``Conflict`` if the populator would hold it back (a dependency, an earlier
        instance of a ``queue``-overlap template); ``NotFound`` for another merchant's."""
        ...

    async def renew_leases(
        self, worker_id: str, held: Sequence[tuple[str, int]], lease_seconds: float
    ) -> set[str]:
        """Extend the leases the worker still holds; the ids it holds."""
        ...

    async def expire_leases(self, *, limit: int, actor: str) -> ExpiredLeases:
        """Jobs whose lease lapsed or whose worker died: back to ``scheduled`` or ``failed``."""
        ...

    async def stuck_in_queue(self, *, older_than_seconds: float, limit: int) -> list[Job]: ...

    # -- reading jobs -----------------------------------------------------------------

    async def get_job(self, merchant_id: MerchantScope, job_id: str) -> Job: ...

    async def list_jobs(self, merchant_id: MerchantScope, flt: JobFilter) -> list[Job]: ...

    async def list_runs(self, merchant_id: MerchantScope, job_id: str) -> list[JobRun]: ...

    async def newest_failed_jobs(
        self, merchant_id: MerchantScope, *, since: datetime | None, limit: int
    ) -> list[FailedJob]:
        """Up to ``limit`` (1-10,000) ``failed`` jobs finished since ``since``, newest
        first, with the head of each one's error. A read; never blocks a writer."""
        ...

    async def get_dependencies(
        self, merchant_id: MerchantScope, job_id: str
    ) -> JobDependencies: ...

    async def list_events(self, merchant_id: MerchantScope, flt: EventFilter) -> list[Event]: ...

    async def find_job_id(self, merchant_id: str, ident: str) -> str:
        """The id of the merchant's job whose id or idempotency key is ``ident``."""
        ...

    async def merchant_stats(self, merchant_id: str, *, now: datetime) -> MerchantStats: ...

    async def system_stats(self, *, now: datetime) -> SystemStats: ...

    async def queue_stats(self, merchant_id: str, *, now: datetime) -> QueueOverview:
        """The merchant's queues (at most ``queue_overview.MAX_QUEUES``): unfinished jobs per
        status, the oldest due job's age (``now``: the app clock), and jobs succeeded and
        failed in the last 5 and 60 minutes. Bounded reads only."""
        ...

    # -- templates --------------------------------------------------------------------

    async def create_template(
        self, new: NewTemplate, *, actor: str, now: datetime, max_per_merchant: int | None
    ) -> Template: ...

    async def declare_templates(
        self,
        declarations: Sequence[Declaration],
        *,
        retire: tuple[str, Collection[str]] | None,
        actor: str,
        now: datetime,
        max_per_merchant: int | None,
    ) -> list[Declared]:
        """Reconcile templates declared in code, by name, in one transaction (several
        processes at once create and change each once); ``retire``: ``(merchant_id,
        task_types)`` whose declared templates no declaration names are switched off."""
        ...

    async def get_template(self, merchant_id: MerchantScope, template_id: str) -> Template: ...

    async def list_templates(
        self,
        merchant_id: MerchantScope,
        *,
        limit: int | None,
        after: tuple[datetime, str] | None,
    ) -> list[Template]: ...

    async def update_template(
        self,
        merchant_id: MerchantScope,
        template_id: str,
        changes: dict[str, Any],
        *,
        actor: str,
        now: datetime,
    ) -> Template: ...

    async def delete_template(
        self, merchant_id: MerchantScope, template_id: str, *, actor: str, now: datetime
    ) -> None: ...

    async def find_template_id(self, merchant_id: str, ident: str) -> str:
        """The id of the merchant's template whose id or name is ``ident``."""
        ...

    async def fire_due_templates(
        self,
        *,
        now: datetime,
        limit: int,
        planner: Planner,
        actor: str,
        max_pending_per_merchant: int | None,
        ahead_until: datetime | None = None,
    ) -> FireRound:
        """Create the instances of due templates and move their schedules on;
        ``ahead_until``: templates due by then are taken too, except those whose
        overlap policy is ``skip`` (the lookahead, docs/adr/0015)."""
        ...

    async def next_template_due_at(self, ahead_seconds: float = 0.0) -> datetime | None:
        """When the recurrence manager next has work: the earliest ``next_run_at``, less
        ``ahead_seconds`` for templates it creates ahead (every overlap policy but ``skip``)."""
        ...

    # -- workers ----------------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        concurrency: int,
        task_types: Sequence[str],
    ) -> None: ...

    async def worker_beat(self, worker_id: str) -> bool:
        """Record a worker's heartbeat; ``False`` when it has no row (pruned)."""
        ...

    async def stop_worker(self, worker_id: str) -> None: ...

    async def mark_dead_workers(self, silent_for_seconds: float) -> list[str]: ...

    async def list_workers(self) -> list[WorkerInfo]: ...

    async def running_by_worker(self, merchant_id: MerchantScope) -> dict[str, WorkerLoad]:
        """Per worker id, the ``running`` jobs of ``merchant_id`` (at most
        ``workers.RUNNING_PER_WORKER`` each, longest-running first) and their total."""
        ...

    async def live_task_types(self) -> set[str] | None:
        """The task types some live worker runs; ``None``: a live worker did not say."""
        ...

    async def unserved_task_types(self) -> dict[str, int]:
        """Queued jobs (every merchant's) per task type that no live worker runs."""
        ...

    # -- event handlers' cursors -------------------------------------------------------

    async def cursor_position(self, name: str) -> int | None:
        """Where handler ``name``'s cursor has read to (``None``: no cursor yet): a read,
        so a poll that finds nothing new writes nothing."""
        ...

    async def take_cursor(
        self, name: str, *, holder: str, lease_seconds: float, now: datetime
    ) -> int | None:
        """Lease handler ``name``'s cursor to ``holder``; its position, or ``None`` while
        another process holds it. Created at the log's end the first time."""
        ...

    async def advance_cursor(
        self, name: str, *, holder: str, position: int, lease_seconds: float, now: datetime
    ) -> bool:
        """Move the cursor and renew the lease; ``False`` if ``holder`` lost it."""
        ...

    async def release_cursor(self, name: str, *, holder: str) -> None: ...

    async def event_horizon(self, after: int, *, gap_seconds: float, now: datetime) -> int:
        """The highest event id a reader after ``after`` may read up to and miss none
        (a gap in the ids younger than ``gap_seconds`` may still be filled)."""
        ...

    # -- progress ---------------------------------------------------------------------

    async def record_progress(self, reports: Sequence[ProgressReport]) -> None:
        """Keep each job's latest report (one transaction; unknown jobs skipped)."""
        ...

    async def get_progress(self, merchant_id: MerchantScope, job_id: str) -> Progress | None:
        """The current attempt's latest report, if it made one."""
        ...

    # -- queues -----------------------------------------------------------------------

    async def pause_queue(
        self, name: str, *, merchant_id: str, actor: str, now: datetime
    ) -> QueuePause:
        """Pause ``name`` for every worker (an event records who); idempotent."""
        ...

    async def resume_queue(self, name: str, *, merchant_id: str, actor: str, now: datetime) -> bool:
        """Resume ``name``; ``False`` if it was not paused."""
        ...

    async def paused_queues(self) -> list[QueuePause]: ...

    async def queue_depths(self, *, limit: int) -> list[QueueDepth]:
        """Every merchant's unfinished jobs per queue and the live workers serving it, for
        operators: the queues having either, by name, at most ``limit`` (1-1000)."""

    # -- retention --------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, *, limit: int) -> PruneCounts:
        """Delete one batch in one short transaction: up to ``limit`` finished jobs past
        ``cutoffs`` that no unfinished job depends on (one status at a time), with their
        runs, dependency rows and events; once none is left, up to ``limit`` events of
        templates deleted before the cutoff. Returns the rows deleted per table; all zero
        when nothing is left. Never blocks on rows another pruner holds (PostgreSQL skips
        them); idempotent in effect."""
        ...

    async def count_prunable(self, cutoffs: Cutoffs) -> PruneCounts:
        """The rows :meth:`prune` would delete for ``cutoffs``, all batches together (a
        read: a dry run)."""
        ...

    # -- table health -----------------------------------------------------------------

    async def table_stats(self, tables: Sequence[str]) -> list[TableStats] | None:
        """The dead and live row versions, size and last vacuums of ``tables`` (those that
        exist), from the database's statistics (a cheap read); ``None`` on a database
        that keeps no dead row versions (SQLite)."""
        ...

    async def vacuum_table(
        self, table: str, *, timeout_seconds: float, cost_delay_ms: float = 0.0
    ) -> bool:
        """``VACUUM (ANALYZE)`` one of ``core.table_health.HOT_TABLES`` (outside any
        transaction), stopped after ``timeout_seconds`` (waiting for its lock included),
        sleeping ``cost_delay_ms`` each time it has done the server's
        ``vacuum_cost_limit`` of work (0: unthrottled);
        ``False`` without running it when another process is vacuuming it through this
        method (an advisory lock: replicas never pile up vacuums of one table). Raises
        ``StoreError`` when it fails or times out."""
        ...

    # -- tenants ----------------------------------------------------------------------

    async def create_merchant(self, name: str, *, now: datetime) -> Merchant: ...

    async def list_merchants(self) -> list[Merchant]: ...

    async def create_api_key(self, new: NewApiKey, *, actor: str, now: datetime) -> ApiKey: ...

    async def find_api_key(self, prefix: str) -> tuple[ApiKey, str] | None: ...

    async def touch_api_key(self, key: ApiKey, now: datetime) -> None: ...

    async def list_api_keys(self, merchant_id: MerchantScope) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, *, actor: str, now: datetime) -> ApiKey: ...
