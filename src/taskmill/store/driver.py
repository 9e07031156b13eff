"""What both drivers share: the :class:`~taskmill.store.protocol.Store` methods over the
store modules' SQLAlchemy statements. Each driver subclasses it with its database handle
and replaces what it does its own way (PostgreSQL's one-statement fast paths)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.canvas import UpstreamResult
from taskmill.core.dependencies import JobDependencies
from taskmill.core.errors import StoreError
from taskmill.core.events import Event, EventFilter
from taskmill.core.failures import FailedJob
from taskmill.core.jobs import Job, JobFilter, JobRun
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause
from taskmill.core.rate_limits import RateLimit
from taskmill.core.retention import Cutoffs, PruneCounts
from taskmill.core.table_health import TableStats
from taskmill.core.templates import Template
from taskmill.core.tenants import ALL_MERCHANTS, ApiKey, Merchant, MerchantScope
from taskmill.store import (
    caller,
    claims,
    dependencies,
    event_cursors,
    events,
    failures,
    graphs,
    jobs,
    names,
    outcomes,
    progress,
    queue_depths,
    queue_overview,
    queues,
    rate_limits,
    retention,
    runs,
    stats,
    templates,
    tenants,
    workers,
)
from taskmill.store.database import Database
from taskmill.store.protocol import Planner, WakeupListener


class SqlStore:
    """The shared implementation of ``Store`` (see ``protocol.py`` for each method)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def notifies(self) -> bool:
        return self.db.dialect.notifies

    def wakeup_listener(self, listen_url: str | None) -> WakeupListener | None:
        return None

    async def close(self) -> None:
        await self.db.close()

    # -- creating jobs ----------------------------------------------------------------

    async def insert_jobs(self, made: Sequence[jobs.MadeJob]) -> None:
        await jobs.insert_made(self.db, made)

    async def create_job(
        self, new: jobs.NewJob, *, actor: str, now: datetime, queue_if_due: bool
    ) -> jobs.CreatedJob:
        return await jobs.create_job(self.db, new, actor=actor, now=now, queue_if_due=queue_if_due)

    async def create_jobs(
        self, news: Sequence[jobs.NewJob], *, actor: str, now: datetime, queue_if_due: bool
    ) -> list[Job]:
        # Without unique keys, the driver's insert (PostgreSQL: one statement, any count).
        return await jobs.create_jobs(
            self.db, news, actor=actor, now=now, queue_if_due=queue_if_due, insert=self.insert_jobs
        )

    async def create_graph(
        self,
        news: Sequence[jobs.NewJob],
        links: Sequence[Sequence[int]],
        *,
        actor: str,
        now: datetime,
        queue_if_due: bool,
    ) -> list[Job]:
        return await graphs.create_graph(
            self.db, news, links, actor=actor, now=now, queue_if_due=queue_if_due
        )

    async def upstream_results(self, job_id: str) -> list[UpstreamResult]:
        return await graphs.upstream_results(self.db, job_id)

    async def count_pending_jobs(self, merchant_id: str, limit: int) -> int:
        return await jobs.pending_jobs(self.db, merchant_id, limit)

    async def create_job_on(
        self, connection: object, new: jobs.NewJob, *, actor: str, now: datetime
    ) -> jobs.CreatedJob:
        return await caller.create_on(connection, self.db, new, actor=actor, now=now)

    async def create_jobs_on(
        self, connection: object, news: Sequence[jobs.NewJob], *, actor: str, now: datetime
    ) -> list[jobs.CreatedJob]:
        return await caller.create_many_on(connection, self.db, news, actor=actor, now=now)

    def after_commit(self, connection: object, callback: Callable[[], None]) -> None:
        caller.on_commit(connection, callback)

    async def finished_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        return await jobs.finished_jobs(self.db, job_ids)

    # -- status changes ---------------------------------------------------------------

    async def enqueue_due(
        self, *, now: datetime, limit: int, actor: str, merchants_in_turn: bool
    ) -> tuple[list[Job], datetime | None]:
        return await claims.enqueue_due_and_next(
            self.db, now=now, limit=limit, actor=actor, merchants_in_turn=merchants_in_turn
        )

    async def claim(self, params: claims.ClaimParams) -> list[Job]:
        return await claims.claim(self.db, params)

    async def claim_rate_limited(self, params: claims.ClaimParams) -> rate_limits.Claimed:
        return await rate_limits.claim(self.db, params)

    async def declare_rate_limits(
        self, declared: dict[str, RateLimit | None], *, worker_id: str, now: datetime
    ) -> list[rate_limits.LimitChange]:
        return await rate_limits.declare(self.db, declared, worker_id=worker_id, now=now)

    async def rate_limits(self, task_types: Sequence[str]) -> dict[str, rate_limits.StoredLimit]:
        return await rate_limits.limits(self.db, task_types)

    async def record_outcomes(
        self,
        successes: Sequence[outcomes.Success],
        failures: Sequence[tuple[outcomes.Attempt, outcomes.Failure]],
    ) -> tuple[list[bool], list[bool]]:
        if not failures:
            return await self._record_successes(successes), []
        dialect = self.db.dialect

        async def record(conn: AsyncConnection) -> tuple[list[bool], list[bool]]:
            done = await self._succeed_in(conn, successes)
            return done, [await outcomes.fail_in(conn, dialect, a, f) for a, f in failures]

        return await self.db.write(record)

    async def _record_successes(self, successes: Sequence[outcomes.Success]) -> list[bool]:
        """``running -> succeeded`` for a batch, a write of its own."""
        return await outcomes.record_successes(self.db, successes)

    async def _succeed_in(
        self, conn: AsyncConnection, successes: Sequence[outcomes.Success]
    ) -> list[bool]:
        """``running -> succeeded`` for a batch, in the caller's transaction."""
        return await outcomes.succeed_many(conn, self.db.dialect, successes)

    async def release(self, attempt: outcomes.Attempt) -> bool:
        return await outcomes.release(self.db, attempt)

    async def cancel(
        self, merchant_id: MerchantScope, job_id: str, *, reason: str, actor: str
    ) -> Job:
        return await outcomes.cancel(
            self.db, job_id, reason=reason, actor=actor, merchant_id=merchant_id
        )

    async def retry_failed(
        self, merchant_id: MerchantScope, job_id: str, *, actor: str, run_at: datetime
    ) -> Job:
        return await outcomes.retry_failed(
            self.db, job_id, actor=actor, run_at=run_at, merchant_id=merchant_id
        )

    async def run_now(
        self, merchant_id: MerchantScope, job_id: str, *, actor: str, run_at: datetime
    ) -> Job:
        return await outcomes.run_now(
            self.db, job_id, actor=actor, run_at=run_at, merchant_id=merchant_id
        )

    async def renew_leases(
        self, worker_id: str, held: Sequence[tuple[str, int]], lease_seconds: float
    ) -> set[str]:
        return await claims.renew_leases(self.db, worker_id, held, lease_seconds)

    async def expire_leases(self, *, limit: int, actor: str) -> claims.ExpiredLeases:
        return await claims.expire_leases(self.db, limit=limit, actor=actor)

    async def stuck_in_queue(self, *, older_than_seconds: float, limit: int) -> list[Job]:
        return await claims.stuck_in_queue(
            self.db, older_than_seconds=older_than_seconds, limit=limit
        )

    # -- reading jobs -----------------------------------------------------------------

    async def get_job(self, merchant_id: MerchantScope, job_id: str) -> Job:
        return await jobs.get_job(self.db, job_id, merchant_id)

    async def list_jobs(self, merchant_id: MerchantScope, flt: JobFilter) -> list[Job]:
        return await jobs.list_jobs(self.db, merchant_id, flt)

    async def list_runs(self, merchant_id: MerchantScope, job_id: str) -> list[JobRun]:
        return await runs.list_runs(self.db, job_id, merchant_id)

    async def newest_failed_jobs(
        self, merchant_id: MerchantScope, *, since: datetime | None, limit: int
    ) -> list[FailedJob]:
        return await failures.newest_failed(self.db, merchant_id, since=since, limit=limit)

    async def get_dependencies(self, merchant_id: MerchantScope, job_id: str) -> JobDependencies:
        return await dependencies.get_dependencies(self.db, job_id, merchant_id)

    async def list_events(self, merchant_id: MerchantScope, flt: EventFilter) -> list[Event]:
        return await events.list_events(self.db, merchant_id, flt)

    async def find_job_id(self, merchant_id: str, ident: str) -> str:
        return await names.find_job_id(self.db, ident, merchant_id)

    async def merchant_stats(self, merchant_id: str, *, now: datetime) -> stats.MerchantStats:
        return await stats.merchant_stats(self.db, merchant_id, now=now)

    async def system_stats(self, *, now: datetime) -> stats.SystemStats:
        return await stats.system_stats(self.db, now=now)

    async def queue_stats(self, merchant_id: str, *, now: datetime) -> queue_overview.QueueOverview:
        return await queue_overview.queue_stats(self.db, merchant_id, now=now)

    # -- templates --------------------------------------------------------------------

    async def create_template(
        self,
        new: templates.NewTemplate,
        *,
        actor: str,
        now: datetime,
        max_per_merchant: int | None,
    ) -> Template:
        return await templates.create_template(
            self.db, new, actor=actor, now=now, max_per_merchant=max_per_merchant
        )

    async def declare_templates(
        self,
        declarations: Sequence[templates.Declaration],
        *,
        retire: tuple[str, Collection[str]] | None,
        actor: str,
        now: datetime,
        max_per_merchant: int | None,
    ) -> list[templates.Declared]:
        return await templates.declare_templates(
            self.db,
            declarations,
            retire=retire,
            actor=actor,
            now=now,
            max_per_merchant=max_per_merchant,
        )

    async def get_template(self, merchant_id: MerchantScope, template_id: str) -> Template:
        return await templates.get_template(self.db, template_id, merchant_id)

    async def list_templates(
        self,
        merchant_id: MerchantScope,
        *,
        limit: int | None,
        after: tuple[datetime, str] | None,
    ) -> list[Template]:
        return await templates.list_templates(self.db, merchant_id, limit=limit, after=after)

    async def update_template(
        self,
        merchant_id: MerchantScope,
        template_id: str,
        changes: dict[str, Any],
        *,
        actor: str,
        now: datetime,
    ) -> Template:
        return await templates.update_template(
            self.db, template_id, changes, actor=actor, now=now, merchant_id=merchant_id
        )

    async def delete_template(
        self, merchant_id: MerchantScope, template_id: str, *, actor: str, now: datetime
    ) -> None:
        await templates.delete_template(
            self.db, template_id, actor=actor, now=now, merchant_id=merchant_id
        )

    async def find_template_id(self, merchant_id: str, ident: str) -> str:
        return await names.find_template_id(self.db, ident, merchant_id)

    async def fire_due_templates(
        self,
        *,
        now: datetime,
        limit: int,
        planner: Planner,
        actor: str,
        max_pending_per_merchant: int | None,
        ahead_until: datetime | None = None,
    ) -> templates.FireRound:
        return await templates.fire_due(
            self.db,
            now,
            limit,
            planner,
            actor=actor,
            max_pending_per_merchant=max_pending_per_merchant,
            ahead_until=ahead_until,
        )

    async def next_template_due_at(self, ahead_seconds: float = 0.0) -> datetime | None:
        return await templates.next_template_due_at(self.db, ahead_seconds)

    # -- workers ----------------------------------------------------------------------

    async def register_worker(
        self,
        worker_id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        concurrency: int,
        task_types: Sequence[str],
    ) -> None:
        await workers.register(self.db, worker_id, hostname, pid, queues, concurrency, task_types)

    async def worker_beat(self, worker_id: str) -> bool:
        return await workers.beat(self.db, worker_id)

    async def stop_worker(self, worker_id: str) -> None:
        await workers.stop(self.db, worker_id)

    async def mark_dead_workers(self, silent_for_seconds: float) -> list[str]:
        return await workers.mark_dead(self.db, silent_for_seconds)

    async def list_workers(self) -> list[workers.WorkerInfo]:
        return await workers.list_workers(self.db)

    async def running_by_worker(self, merchant_id: MerchantScope) -> dict[str, workers.WorkerLoad]:
        return await workers.running_by_worker(self.db, merchant_id)

    async def live_task_types(self) -> set[str] | None:
        return await workers.live_task_types(self.db)

    async def unserved_task_types(self) -> dict[str, int]:
        async with self.db.read() as conn:
            return await stats.unserved(conn, ALL_MERCHANTS)

    # -- event handlers' cursors -------------------------------------------------------

    async def cursor_position(self, name: str) -> int | None:
        return await event_cursors.cursor_position(self.db, name)

    async def take_cursor(
        self, name: str, *, holder: str, lease_seconds: float, now: datetime
    ) -> int | None:
        return await event_cursors.take_cursor(
            self.db, name, holder=holder, lease_seconds=lease_seconds, now=now
        )

    async def advance_cursor(
        self, name: str, *, holder: str, position: int, lease_seconds: float, now: datetime
    ) -> bool:
        return await event_cursors.advance_cursor(
            self.db, name, holder=holder, position=position, lease_seconds=lease_seconds, now=now
        )

    async def release_cursor(self, name: str, *, holder: str) -> None:
        await event_cursors.release_cursor(self.db, name, holder=holder)

    async def event_horizon(self, after: int, *, gap_seconds: float, now: datetime) -> int:
        return await event_cursors.event_horizon(self.db, after, gap_seconds=gap_seconds, now=now)

    # -- progress ---------------------------------------------------------------------

    async def record_progress(self, reports: Sequence[progress.ProgressReport]) -> None:
        await progress.record_progress(self.db, reports)

    async def get_progress(self, merchant_id: MerchantScope, job_id: str) -> Progress | None:
        return await progress.get_progress(self.db, merchant_id, job_id)

    # -- queues -----------------------------------------------------------------------

    async def pause_queue(
        self, name: str, *, merchant_id: str, actor: str, now: datetime
    ) -> QueuePause:
        return await queues.pause_queue(
            self.db, name, merchant_id=merchant_id, actor=actor, now=now
        )

    async def resume_queue(self, name: str, *, merchant_id: str, actor: str, now: datetime) -> bool:
        return await queues.resume_queue(
            self.db, name, merchant_id=merchant_id, actor=actor, now=now
        )

    async def paused_queues(self) -> list[QueuePause]:
        return await queues.paused_queues(self.db)

    async def queue_depths(self, *, limit: int) -> list[queue_depths.QueueDepth]:
        return await queue_depths.queue_depths(self.db, limit=limit)

    # -- retention --------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, *, limit: int) -> PruneCounts:
        return await retention.prune_batch(self.db, cutoffs, limit=limit)

    async def count_prunable(self, cutoffs: Cutoffs) -> PruneCounts:
        return await retention.count_prunable(self.db, cutoffs)

    # -- table health (PostgreSQL's driver has its own) ----------------------------------

    async def table_stats(self, tables: Sequence[str]) -> list[TableStats] | None:
        # SQLite updates rows in place and reuses a deleted row's space: nothing piles up.
        return None

    async def vacuum_table(
        self, table: str, *, timeout_seconds: float, cost_delay_ms: float = 0.0
    ) -> bool:
        raise StoreError(f"no VACUUM to run on {self.db.dialect.name}")

    # -- tenants ----------------------------------------------------------------------

    async def create_merchant(self, name: str, *, now: datetime) -> Merchant:
        return await tenants.create_merchant(self.db, name, now=now)

    async def list_merchants(self) -> list[Merchant]:
        return await tenants.list_merchants(self.db)

    async def create_api_key(self, new: tenants.NewApiKey, *, actor: str, now: datetime) -> ApiKey:
        return await tenants.create_api_key(self.db, new, actor=actor, now=now)

    async def find_api_key(self, prefix: str) -> tuple[ApiKey, str] | None:
        return await tenants.find_api_key(self.db, prefix)

    async def touch_api_key(self, key: ApiKey, now: datetime) -> None:
        await tenants.touch_api_key(self.db, key, now)

    async def list_api_keys(self, merchant_id: MerchantScope) -> list[ApiKey]:
        return await tenants.list_api_keys(self.db, merchant_id)

    async def revoke_api_key(self, key_id: str, *, actor: str, now: datetime) -> ApiKey:
        return await tenants.revoke_api_key(self.db, key_id, actor=actor, now=now)
