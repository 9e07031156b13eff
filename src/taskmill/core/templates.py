"""Templates: recurring schedules that produce job instances, and what to do with missed ticks."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import ScheduleType
from taskmill.core.schedules import CronSchedule, IntervalSchedule, Schedule, load_timezone

# Walking a schedule tick by tick is bounded: a per-second cron missed for a day is
# 86,400 ticks; past this many we jump straight to the future (documented in ADR 0002).
MAX_TICKS_WALKED = 10_000


class MisfirePolicy(enum.StrEnum):
    """What to do with ticks missed while no recurrence manager ran."""

    SKIP = "skip"  # run none of them; carry on from the next future tick
    RUN_ONCE = "run_once"  # run one instance, for the latest missed tick
    CATCH_UP = "catch_up"  # run each missed tick, at most ``max_catchup`` (the latest)


class OverlapPolicy(enum.StrEnum):
    """What to do when a tick falls due while the previous instance is unfinished."""

    ALLOW = "allow"
    SKIP = "skip"
    QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class Template:
    """A recurring schedule (interval or cron) of one task type for one merchant."""

    id: str
    merchant_id: str
    name: str
    task_type: str
    queue: str
    priority: int
    payload: Any
    schedule_type: ScheduleType
    cron_expression: str | None
    interval_seconds: float | None
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    active: bool
    next_run_at: datetime | None
    last_scheduled_for: datetime | None
    misfire_policy: MisfirePolicy
    overlap_policy: OverlapPolicy
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime

    def schedule(self) -> Schedule:
        return build_schedule(
            self.schedule_type,
            cron_expression=self.cron_expression,
            interval_seconds=self.interval_seconds,
            timezone=self.timezone,
            start_at=self.start_at or self.created_at,
            end_at=self.end_at,
        )


def build_schedule(
    schedule_type: ScheduleType,
    *,
    cron_expression: str | None,
    interval_seconds: float | None,
    timezone: str,
    start_at: datetime,
    end_at: datetime | None,
) -> Schedule:
    """The :class:`Schedule` of a recurring template, or a :class:`ValidationError`."""
    if schedule_type is ScheduleType.CRON:
        if not cron_expression:
            raise ValidationError("cron", "is required for a cron schedule")
        return _bounded_cron(CronSchedule(cron_expression, timezone), start_at, end_at)
    if schedule_type is ScheduleType.INTERVAL:
        if interval_seconds is None:
            raise ValidationError("interval_seconds", "is required for an interval schedule")
        return IntervalSchedule(interval_seconds, start_at, end_at)
    raise ValidationError("schedule_type", f"{schedule_type.value} is not recurring")


@dataclass(frozen=True, slots=True)
class _BoundedCron:
    cron: CronSchedule
    start_at: datetime
    end_at: datetime | None

    def next_after(self, after: datetime) -> datetime | None:
        nxt = self.cron.next_after(max(after, self.start_at - timedelta(microseconds=1)))
        if nxt is None or (self.end_at is not None and nxt > self.end_at):
            return None
        return nxt


def _bounded_cron(cron: CronSchedule, start_at: datetime, end_at: datetime | None) -> Schedule:
    return _BoundedCron(cron, start_at, end_at)


@dataclass(frozen=True, slots=True)
class FirePlan:
    """The instances to create now (their ``scheduled_for``) and the tick to wait for next."""

    fire_at: list[datetime]
    next_run_at: datetime | None
    dropped: int = 0  # missed ticks the misfire policy chose not to run


def plan_fires(
    schedule: Schedule,
    due_at: datetime,
    now: datetime,
    policy: MisfirePolicy,
    *,
    max_catchup: int = 10,
    grace_seconds: float = 60.0,
) -> FirePlan:
    """Which ticks from ``due_at`` up to ``now`` become instances, per ``policy``.

    A tick no older than ``grace_seconds`` is on time and always runs; older ones
    were missed and follow the misfire policy.
    """
    if max_catchup < 1:
        raise ValidationError("max_catchup", "must be at least 1")
    ticks, upcoming = _ticks_until(schedule, due_at, now, grace_seconds, max_catchup)
    on_time = [t for t in ticks if (now - t).total_seconds() <= grace_seconds]
    missed = [t for t in ticks if (now - t).total_seconds() > grace_seconds]
    if policy is MisfirePolicy.SKIP or not missed:
        chosen = on_time
    elif policy is MisfirePolicy.RUN_ONCE:
        chosen = on_time or missed[-1:]
    else:
        # max_catchup bounds the whole burst; on-time ticks are never dropped.
        chosen = (missed + on_time)[-max(max_catchup, len(on_time)) :]
    return FirePlan(fire_at=chosen, next_run_at=upcoming, dropped=len(ticks) - len(chosen))


def _walk(
    schedule: Schedule, start: datetime | None, now: datetime
) -> tuple[list[datetime], datetime | None, bool]:
    """Ticks from ``start`` up to ``now``, the first one after, and whether the walk ended."""
    ticks: list[datetime] = []
    tick = start
    while tick is not None and tick <= now:
        if len(ticks) == MAX_TICKS_WALKED:
            return ticks, tick, False
        ticks.append(tick)
        tick = schedule.next_after(tick)
    return ticks, tick, True


def _ticks_until(
    schedule: Schedule, due_at: datetime, now: datetime, grace_seconds: float, keep: int
) -> tuple[list[datetime], datetime | None]:
    """The ticks due by ``now`` that a policy may need: all of them, or, after a long
    outage, the on-time ones and the latest ``keep`` missed ones; plus the next tick."""
    ticks, upcoming, complete = _walk(schedule, due_at, now)
    if complete:
        return ticks, upcoming
    # Too many to walk (a per-second schedule down for hours): resume near ``now``,
    # far enough back to see ``keep`` missed ticks at the spacing seen so far.
    spacing = (ticks[-1] - ticks[0]) / (len(ticks) - 1)
    resume = now - timedelta(seconds=grace_seconds) - spacing * (keep + 1)
    tail, upcoming, complete = _walk(schedule, schedule.next_after(resume), now)
    if not complete:  # irregular spacing defeated the estimate: jump to the future
        upcoming = schedule.next_after(now)
    return tail, upcoming


@dataclass(frozen=True, slots=True)
class FirePreview:
    """One upcoming fire time, in UTC and in the template's zone.

    ``dst_affected`` marks a fire in a repeated (fall-back) hour or exactly at a clock
    change (where a fixed time inside a spring-forward gap is moved to).
    """

    at: datetime
    local: datetime
    dst_affected: bool


def preview_fires(
    schedule: Schedule, timezone: str, after: datetime, count: int
) -> list[FirePreview]:
    """The next ``count`` fire times strictly after ``after`` (fewer if the schedule ends)."""
    if not 1 <= count <= 1000:
        raise ValidationError("count", "must be between 1 and 1000")
    tz = load_timezone(timezone)
    fires: list[FirePreview] = []
    tick = schedule.next_after(after)
    while tick is not None and len(fires) < count:
        fires.append(FirePreview(tick, tick.astimezone(tz), _dst_affected(tick, tz)))
        tick = schedule.next_after(tick)
    return fires


def _dst_affected(instant: datetime, tz: tzinfo) -> bool:
    local = instant.astimezone(tz)
    wall = local.replace(tzinfo=None)
    repeated = (
        wall.replace(tzinfo=tz, fold=0).utcoffset() != wall.replace(tzinfo=tz, fold=1).utcoffset()
    )
    at_change = (instant - timedelta(seconds=1)).astimezone(tz).utcoffset() != local.utcoffset()
    return repeated or at_change
