"""Everything an API key may do, scoped to its merchant in this one place.

Routes get a :class:`TenantScope` for the authenticated key and nothing else: it holds
no database handle, and every call goes to the jobs service with this key's merchant,
so no route can reach an unscoped query; another merchant's ids answer ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.events import Event, EventFilter
from taskmill.core.jobs import Job, JobFilter, JobRun
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause
from taskmill.core.templates import FirePreview, Template
from taskmill.core.tenants import ALL_MERCHANTS, ApiKey, Merchant, MerchantScope, Scope
from taskmill.services.api_keys import ApiKeys, IssuedKey
from taskmill.services.jobs import BulkOutcome, Failures, Jobs
from taskmill.services.scheduling import Scheduled, ScheduleRequest
from taskmill.services.templates import ScheduleDraft, TemplateUpdate
from taskmill.services.waiting import JobWaiters
from taskmill.store.protocol import MerchantStats, QueueOverview, WorkerInfo, WorkerLoad

PAUSED_BY_ADMIN = "switched off by an administrator"


class TenantScope:
    """One merchant's view of taskmill, acting as ``actor`` (which key)."""

    __slots__ = ("_api_keys", "_jobs", "_waiters", "actor", "merchant_id", "scopes")

    def __init__(
        self,
        merchant_id: str,
        actor: str,
        scopes: frozenset[Scope],
        jobs: Jobs,
        api_keys: ApiKeys,
        waiters: JobWaiters | None = None,
    ) -> None:
        self.merchant_id = merchant_id
        self.actor = actor
        self.scopes = scopes
        self._jobs = jobs
        self._api_keys = api_keys
        self._waiters = waiters

    @property
    def clock(self) -> Clock:
        return self._jobs.clock

    async def schedule(self, req: ScheduleRequest) -> Scheduled:
        return await self._jobs.schedule(
            replace(req, merchant_id=self.merchant_id, actor=self.actor)
        )

    async def get_job(self, job_id: str) -> Job:
        return await self._jobs.get(self.merchant_id, job_id)

    async def wait_for_job(self, job_id: str, seconds: float) -> Job:
        """The job once finished, or as it is after ``seconds`` (``NotFound`` for another
        merchant's, before any wait)."""
        if self._waiters is None or seconds <= 0:
            return await self.get_job(job_id)
        try:
            return await self._waiters.wait(self.merchant_id, job_id, seconds)
        except TimeoutError:
            return await self.get_job(job_id)

    async def waiting_reason(self, job: Job) -> str | None:
        return await self._jobs.waiting_reason(job)

    async def progress(self, job_id: str) -> Progress | None:
        return await self._jobs.progress(self.merchant_id, job_id)

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        return await self._jobs.list(self.merchant_id, flt)

    async def cancel_job(self, job_id: str, reason: str) -> Job:
        return await self._jobs.cancel(self.merchant_id, job_id, reason=reason, actor=self.actor)

    async def retry_job(self, job_id: str) -> Job:
        return await self._jobs.retry(self.merchant_id, job_id, actor=self.actor)

    async def cancel_jobs(self, job_ids: Sequence[str], reason: str) -> list[BulkOutcome]:
        return await self._jobs.cancel_many(
            self.merchant_id, job_ids, reason=reason, actor=self.actor
        )

    async def retry_jobs(self, job_ids: Sequence[str]) -> list[BulkOutcome]:
        return await self._jobs.retry_many(self.merchant_id, job_ids, actor=self.actor)

    async def failures(self, since: datetime | None, limit: int) -> Failures:
        return await self._jobs.failures(self.merchant_id, since=since, limit=limit)

    async def run_now(self, job_id: str) -> Job:
        """Queue a ``scheduled`` job of this merchant now, acting as this key."""
        return await self._jobs.run_now(self.merchant_id, job_id, actor=self.actor)

    async def dependencies(self, job_id: str) -> JobDependencies:
        """The job's upstream and downstream jobs (404 for another merchant's job)."""
        return await self._jobs.dependencies(self.merchant_id, job_id)

    async def runs(self, job_id: str) -> list[JobRun]:
        return await self._jobs.runs(self.merchant_id, job_id)

    async def events(self, flt: EventFilter) -> list[Event]:
        return await self._jobs.events(self.merchant_id, flt)

    async def stats(self) -> MerchantStats:
        return await self._jobs.stats(self.merchant_id)

    async def queues(self) -> QueueOverview:
        return await self._jobs.queues(self.merchant_id)

    async def list_templates(
        self, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Template]:
        return await self._jobs.list_templates(self.merchant_id, limit=limit, after=after)

    async def get_template(self, ident: str) -> Template:
        """By id or, failing that, by the template's name (unique per merchant)."""
        template_id = await self._jobs.template_id(self.merchant_id, ident)
        return await self._jobs.get_template(self.merchant_id, template_id)

    async def update_template(self, template_id: str, update: TemplateUpdate) -> Template:
        return await self._jobs.update_template(
            self.merchant_id, template_id, update, actor=self.actor
        )

    async def delete_template(self, template_id: str) -> None:
        await self._jobs.delete_template(self.merchant_id, template_id, actor=self.actor)

    async def workers(self) -> list[WorkerInfo]:
        """Workers are shared infrastructure: every tenant sees them (no tenant data)."""
        return await self._jobs.workers()

    async def paused_queues(self) -> list[QueuePause]:
        """Paused queues are shared infrastructure, like workers: every tenant sees them."""
        return await self._jobs.paused_queues()

    async def running_by_worker(self) -> dict[str, WorkerLoad]:
        """The jobs each worker runs now: this merchant's only, as workers are shared
        and the jobs on them are not; every merchant's for an ``admin`` key, which sees
        across tenants (the operator's view)."""
        scope: MerchantScope = ALL_MERCHANTS if Scope.ADMIN in self.scopes else self.merchant_id
        return await self._jobs.running_by_worker(scope)

    def admin(self) -> AdminScope:
        """Cross-tenant management, for keys with the ``admin`` scope only."""
        if Scope.ADMIN not in self.scopes:
            raise PermissionError("admin scope required")
        return AdminScope(self.merchant_id, self.actor, self._jobs, self._api_keys)

    async def preview(self, template_id: str, count: int) -> list[FirePreview]:
        return await self._jobs.preview(self.merchant_id, template_id, count)

    def preview_schedule(self, draft: ScheduleDraft, count: int) -> list[FirePreview]:
        """A schedule's next fires before it is stored (no data of any merchant read)."""
        return self._jobs.preview_schedule(draft, count)


@dataclass(frozen=True, slots=True)
class AdminScope:
    """What an ``admin`` key may do beyond its own merchant: merchants, keys, and any
    merchant's templates (to find and stop one that floods or breaks the scheduler)."""

    merchant_id: str
    actor: str
    _jobs: Jobs
    _api_keys: ApiKeys

    async def create_merchant(self, name: str) -> Merchant:
        return await self._api_keys.create_merchant(name)

    async def list_merchants(self) -> list[Merchant]:
        return await self._api_keys.list_merchants()

    async def issue_key(
        self,
        merchant_id: str,
        name: str,
        scopes: Collection[Scope],
        expires_at: datetime | None,
    ) -> IssuedKey:
        return await self._api_keys.issue(
            merchant_id, name, scopes, expires_at=expires_at, actor=self.actor
        )

    async def list_keys(self, merchant_id: str | None) -> list[ApiKey]:
        return await self._api_keys.list_keys(_scope(merchant_id))

    async def list_templates(
        self, merchant_id: str | None, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Template]:
        """Any merchant's templates (every merchant's when ``merchant_id`` is ``None``)."""
        return await self._jobs.list_templates(_scope(merchant_id), limit=limit, after=after)

    async def get_template(self, template_id: str) -> Template:
        return await self._jobs.get_template(ALL_MERCHANTS, template_id)

    async def pause_template(self, template_id: str) -> Template:
        """Switch any merchant's template off without evaluating its schedule; its
        owner sees why in ``last_error`` and may switch it on again."""
        return await self._jobs.switch_off_template(
            ALL_MERCHANTS, template_id, PAUSED_BY_ADMIN, actor=self.actor
        )

    async def delete_template(self, template_id: str) -> None:
        await self._jobs.delete_template(ALL_MERCHANTS, template_id, actor=self.actor)

    async def pause_queue(self, name: str) -> QueuePause:
        """Pause a queue for every merchant (queues are shared by the workers)."""
        return await self._jobs.pause_queue(name, merchant_id=self.merchant_id, actor=self.actor)

    async def resume_queue(self, name: str) -> bool:
        return await self._jobs.resume_queue(name, merchant_id=self.merchant_id, actor=self.actor)

    async def revoke_key(self, key_id: str) -> ApiKey:
        return await self._api_keys.revoke(key_id, actor=self.actor)


def _scope(merchant_id: str | None) -> MerchantScope:
    """An admin's optional ``merchant_id`` filter: unset means every merchant."""
    return ALL_MERCHANTS if merchant_id is None else merchant_id
