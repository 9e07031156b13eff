"""Use cases on templates: update (schedule, payload, policies), switch on/off, delete,
preview. ``next_run_at`` is recomputed whenever the schedule or ``active`` changes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from taskmill.core.clock import Clock
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import ScheduleType
from taskmill.core.schedules import Schedule, utc
from taskmill.core.templates import (
    FirePreview,
    JobFailurePolicy,
    MisfirePolicy,
    OverlapPolicy,
    Template,
    build_schedule,
    first_tick,
    job_failure_policy,
    preview_fires,
)
from taskmill.core.tenants import MerchantScope
from taskmill.core.text import check_json
from taskmill.store.protocol import Store

_UNSET: Any = object()
_SCHEDULE_FIELDS = {"cron_expression", "interval_seconds", "timezone", "start_at", "end_at"}


@dataclass(frozen=True, slots=True)
class MerchantLimits:
    """What one merchant may ask of the shared scheduler (``[scheduler]``); ``None``: no cap."""

    min_interval_seconds: float = 1.0
    max_templates_per_merchant: int | None = None
    max_pending_jobs_per_merchant: int | None = None


def check_interval(seconds: float | None, limits: MerchantLimits) -> None:
    """Refuse an interval below the minimum: a tick every nanosecond would flood the
    recurrence manager (and a zero step cannot be evaluated at all)."""
    if seconds is not None and not seconds >= limits.min_interval_seconds:  # NaN too
        raise ValidationError(
            "interval_seconds", f"must be at least {limits.min_interval_seconds:g} seconds"
        )


@dataclass(frozen=True, slots=True)
class TemplateUpdate:
    """Fields to change; anything left ``_UNSET`` stays as it is."""

    name: str = _UNSET
    payload: Any = _UNSET
    cron_expression: str = _UNSET
    interval_seconds: float = _UNSET
    timezone: str = _UNSET
    start_at: datetime | None = _UNSET
    end_at: datetime | None = _UNSET
    queue: str = _UNSET
    priority: int = _UNSET
    active: bool = _UNSET
    misfire_policy: MisfirePolicy = _UNSET
    overlap_policy: OverlapPolicy = _UNSET
    on_job_failure: JobFailurePolicy = _UNSET
    max_attempts: int = _UNSET
    timeout_seconds: float | None = _UNSET

    def changes(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not _UNSET
        }


@dataclass(frozen=True, slots=True)
class ScheduleDraft:
    """A schedule as a user types it, before it is stored: exactly one of ``cron`` and
    ``interval_seconds``; ``start_at`` ``None``: from now."""

    cron: str | None
    interval_seconds: float | None
    timezone: str
    start_at: datetime | None = None


class Templates:
    """Template use cases, scoped to a merchant when one is given."""

    def __init__(self, store: Store, clock: Clock, limits: MerchantLimits | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits or MerchantLimits()

    async def update(
        self, template_id: str, update: TemplateUpdate, *, actor: str, merchant_id: MerchantScope
    ) -> Template:
        """Validate ``update`` against the template as it is, then store it.

        Switching a template off never evaluates its schedule (so even one that cannot
        be evaluated can be stopped); a change to its schedule, or switching it on,
        validates the whole schedule as it would then be and clears ``last_error``."""
        current = await self.store.get_template(merchant_id, template_id)
        changes = update.changes()
        for key, value in changes.items():
            check_json(key, value)  # a lone surrogate or NUL cannot be stored
        _check_simple_fields(current, changes)
        for key in ("start_at", "end_at"):
            if changes.get(key) is not None:
                changes[key] = utc(changes[key])
        now = self.clock.now()
        if _SCHEDULE_FIELDS & changes.keys() or changes.get("active") is True:
            merged = {**_schedule_fields(current), **changes}
            check_interval(merged["interval_seconds"], self.limits)
            active = merged.get("active", current.active)
            changes["next_run_at"] = _first_fire(current.schedule_type, merged, now, active)
            changes["last_error"] = None
        elif changes.get("active") is False:
            changes["next_run_at"] = None
        return await self.store.update_template(
            merchant_id, template_id, changes, actor=actor, now=now
        )

    async def switch_off(
        self, template_id: str, reason: str, *, actor: str, merchant_id: MerchantScope
    ) -> Template:
        """Switch a template off with ``reason`` as its ``last_error`` (an administrator
        stopping any merchant's template); its schedule is not evaluated."""
        changes = {"active": False, "next_run_at": None, "last_error": reason}
        return await self.store.update_template(
            merchant_id, template_id, changes, actor=actor, now=self.clock.now()
        )

    async def set_active(
        self, template_id: str, active: bool, *, actor: str, merchant_id: MerchantScope
    ) -> Template:
        """Switch a template on (from its next tick after now) or off."""
        return await self.update(
            template_id, TemplateUpdate(active=active), actor=actor, merchant_id=merchant_id
        )

    async def preview(
        self, template_id: str, count: int, *, merchant_id: MerchantScope
    ) -> list[FirePreview]:
        """The next ``count`` fire times after now, DST-affected ones flagged."""
        template = await self.store.get_template(merchant_id, template_id)
        return preview_fires(template.schedule(), template.timezone, self.clock.now(), count)

    def preview_schedule(self, draft: ScheduleDraft, count: int) -> list[FirePreview]:
        """The next ``count`` fires of ``draft`` after now, DST-affected ones flagged;
        ``ValidationError`` naming the field as creating the template would."""
        if (draft.cron is None) == (draft.interval_seconds is None):
            raise ValidationError("cron", "give exactly one of interval_seconds or cron")
        now = self.clock.now()
        schedule = _draft_schedule(draft, now, self.limits)
        # An interval may fire at now itself (as a new template's first tick does).
        after = now - timedelta(microseconds=1) if draft.interval_seconds is not None else now
        return preview_fires(schedule, draft.timezone, after, count)


def _draft_schedule(draft: ScheduleDraft, now: datetime, limits: MerchantLimits) -> Schedule:
    """``draft``'s schedule, checked as ``Scheduler`` checks a new template's (same
    fields named in the same errors)."""
    check_interval(draft.interval_seconds, limits)
    kind = ScheduleType.CRON if draft.cron is not None else ScheduleType.INTERVAL
    return build_schedule(
        kind,
        cron_expression=draft.cron,
        interval_seconds=draft.interval_seconds,
        timezone=draft.timezone,
        start_at=utc(draft.start_at) if draft.start_at else now,
        end_at=None,
    )


def _schedule_fields(t: Template) -> dict[str, Any]:
    return {
        "cron_expression": t.cron_expression,
        "interval_seconds": t.interval_seconds,
        "timezone": t.timezone,
        "start_at": t.start_at or t.created_at,
        "end_at": t.end_at,
    }


def _first_fire(
    kind: ScheduleType, merged: dict[str, Any], now: datetime, active: bool
) -> datetime | None:
    """Validate the merged schedule and return when it next fires (``None`` when off)."""
    schedule = build_schedule(
        kind,
        cron_expression=merged["cron_expression"],
        interval_seconds=merged["interval_seconds"],
        timezone=merged["timezone"],
        start_at=merged["start_at"],
        end_at=merged["end_at"],
    )
    if not active:
        return None
    return first_tick(schedule, now)


def _check_simple_fields(current: Template, changes: dict[str, Any]) -> None:
    if "on_job_failure" in changes:
        changes["on_job_failure"] = job_failure_policy(changes["on_job_failure"])
    if "name" in changes and not str(changes["name"]).strip():
        raise ValidationError("name", "must not be empty")
    if "max_attempts" in changes and changes["max_attempts"] < 1:
        raise ValidationError("max_attempts", "must be at least 1")
    timeout = changes.get("timeout_seconds")
    if timeout is not None and timeout <= 0:
        raise ValidationError("timeout_seconds", "must be greater than 0")
    if "cron_expression" in changes and current.schedule_type is not ScheduleType.CRON:
        raise ValidationError("cron_expression", "this template is an interval schedule")
    if "interval_seconds" in changes and current.schedule_type is not ScheduleType.INTERVAL:
        raise ValidationError("interval_seconds", "this template is a cron schedule")
