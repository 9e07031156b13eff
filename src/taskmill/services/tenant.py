"""Everything an API key may do, scoped to its merchant in this one place.

Routes get a :class:`TenantScope` for the authenticated key and nothing else, so no
route can reach an unscoped query: another merchant's ids answer ``NotFound``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from taskmill.core.clock import Clock
from taskmill.core.dependencies import JobDependencies
from taskmill.core.events import Event
from taskmill.core.jobs import Job, JobRun
from taskmill.core.templates import FirePreview, Template
from taskmill.core.tenants import ApiKey, Merchant, Scope
from taskmill.services.api_keys import ApiKeys, IssuedKey
from taskmill.services.scheduling import Scheduled, Scheduler, ScheduleRequest
from taskmill.services.templates import Templates, TemplateUpdate
from taskmill.store import dependencies as dependency_store
from taskmill.store import events as event_store
from taskmill.store import jobs as job_store
from taskmill.store import names, outcomes, tenants
from taskmill.store import runs as run_store
from taskmill.store import templates as template_store
from taskmill.store import workers as worker_store
from taskmill.store.database import Database
from taskmill.store.events import EventFilter
from taskmill.store.jobs import JobFilter
from taskmill.store.workers import WorkerInfo

PAUSED_BY_ADMIN = "switched off by an administrator"


@dataclass(frozen=True, slots=True)
class TenantScope:
    """One merchant's view of taskmill, acting as ``actor`` (which key)."""

    merchant_id: str
    actor: str
    db: Database
    clock: Clock
    scheduler: Scheduler
    templates: Templates
    api_keys: ApiKeys
    scopes: frozenset[Scope]

    async def schedule(self, req: ScheduleRequest) -> Scheduled:
        scoped = replace(req, merchant_id=self.merchant_id, actor=self.actor)
        return await self.scheduler.schedule(scoped)

    async def get_job(self, job_id: str) -> Job:
        return await job_store.get_job(self.db, job_id, self.merchant_id)

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        return await job_store.list_jobs(self.db, replace(flt, merchant_id=self.merchant_id))

    async def cancel_job(self, job_id: str, reason: str) -> Job:
        return await outcomes.cancel(
            self.db, job_id, reason=reason, actor=self.actor, merchant_id=self.merchant_id
        )

    async def retry_job(self, job_id: str) -> Job:
        return await outcomes.retry_failed(
            self.db, job_id, actor=self.actor, run_at=self.clock.now(), merchant_id=self.merchant_id
        )

    async def dependencies(self, job_id: str) -> JobDependencies:
        """The job's upstream and downstream jobs (404 for another merchant's job)."""
        return await dependency_store.get_dependencies(self.db, job_id, self.merchant_id)

    async def runs(self, job_id: str) -> list[JobRun]:
        await self.get_job(job_id)  # 404 for another merchant's job
        return await run_store.list_runs(self.db, job_id, self.merchant_id)

    async def events(self, flt: EventFilter) -> list[Event]:
        return await event_store.list_events(self.db, replace(flt, merchant_id=self.merchant_id))

    async def list_templates(
        self, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Template]:
        return await template_store.list_templates(
            self.db, self.merchant_id, limit=limit, after=after
        )

    async def get_template(self, ident: str) -> Template:
        """By id or, failing that, by the template's name (unique per merchant)."""
        template_id = await names.find_template_id(self.db, ident, self.merchant_id)
        return await template_store.get_template(self.db, template_id, self.merchant_id)

    async def update_template(self, template_id: str, update: TemplateUpdate) -> Template:
        return await self.templates.update(
            template_id, update, actor=self.actor, merchant_id=self.merchant_id
        )

    async def delete_template(self, template_id: str) -> None:
        await template_store.delete_template(
            self.db,
            template_id,
            actor=self.actor,
            now=self.clock.now(),
            merchant_id=self.merchant_id,
        )

    async def workers(self) -> list[WorkerInfo]:
        """Workers are shared infrastructure: every tenant sees them (no tenant data)."""
        return await worker_store.list_workers(self.db)

    def admin(self) -> AdminScope:
        """Cross-tenant management, for keys with the ``admin`` scope only."""
        if Scope.ADMIN not in self.scopes:
            raise PermissionError("admin scope required")
        return AdminScope(self)

    async def preview(self, template_id: str, count: int) -> list[FirePreview]:
        return await self.templates.preview(template_id, count, merchant_id=self.merchant_id)


@dataclass(frozen=True, slots=True)
class AdminScope:
    """What an ``admin`` key may do beyond its own merchant: merchants, keys, and any
    merchant's templates (to find and stop one that floods or breaks the scheduler)."""

    tenant: TenantScope

    async def create_merchant(self, name: str) -> Merchant:
        return await tenants.create_merchant(self.tenant.db, name, now=self.tenant.clock.now())

    async def list_merchants(self) -> list[Merchant]:
        return await tenants.list_merchants(self.tenant.db)

    async def issue_key(
        self,
        merchant_id: str,
        name: str,
        scopes: Collection[Scope],
        expires_at: datetime | None,
    ) -> IssuedKey:
        return await self.tenant.api_keys.issue(
            merchant_id, name, scopes, expires_at=expires_at, actor=self.tenant.actor
        )

    async def list_keys(self, merchant_id: str | None) -> list[ApiKey]:
        return await tenants.list_api_keys(self.tenant.db, merchant_id)

    async def list_templates(
        self, merchant_id: str | None, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Template]:
        """Any merchant's templates (every merchant's when ``merchant_id`` is ``None``)."""
        return await template_store.list_templates(
            self.tenant.db, merchant_id, limit=limit, after=after
        )

    async def get_template(self, template_id: str) -> Template:
        return await template_store.get_template(self.tenant.db, template_id)

    async def pause_template(self, template_id: str) -> Template:
        """Switch any merchant's template off without evaluating its schedule; its
        owner sees why in ``last_error`` and may switch it on again."""
        return await self.tenant.templates.switch_off(
            template_id, PAUSED_BY_ADMIN, actor=self.tenant.actor, merchant_id=None
        )

    async def delete_template(self, template_id: str) -> None:
        await template_store.delete_template(
            self.tenant.db, template_id, actor=self.tenant.actor, now=self.tenant.clock.now()
        )

    async def revoke_key(self, key_id: str) -> ApiKey:
        return await tenants.revoke_api_key(
            self.tenant.db, key_id, actor=self.tenant.actor, now=self.tenant.clock.now()
        )
