"""Templates: recurring schedules that produce job instances, and what to do with missed ticks."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import ScheduleType
from taskmill.core.schedules import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    check_schedule_time,
    load_timezone,
)

# Walking a schedule tick by tick is bounded: a per-second cron missed for a day is
# 86,400 ticks; past this many, missed ticks are counted by arithmetic (ADR 0002).
MAX_TICKS_WALKED = 10_000
# At most this many on-time ticks become instances per template per round; the rest stay
# due (``next_run_at`` is the first of them) and are planned in the next round.
MAX_ON_TIME_PER_ROUND = 100
MAX_CATCHUP = 1000
# A tick read less than this late is on time whatever ``grace_seconds`` says: the
# recurrence manager always reads a tick a little after it falls due.
MIN_GRACE_SECONDS = 1.0
MAX_GRACE_SECONDS = 86400.0
_US = timedelta(microseconds=1)


class MisfirePolicy(enum.StrEnum):
    """What to do with ticks missed while no recurrence manager ran."""

    # On-time ticks (at most ``grace_seconds`` late) always run, whatever the policy.
    SKIP = "skip"  # run none of the missed ticks
    RUN_ONCE = "run_once"  # run one instance for them all, at the latest missed tick
    CATCH_UP = "catch_up"  # run the latest ``max_catchup`` missed ticks


class OverlapPolicy(enum.StrEnum):
    """What to do when a tick falls due while the previous instance is unfinished."""

    ALLOW = "allow"
    SKIP = "skip"
    QUEUE = "queue"


class JobFailurePolicy(enum.StrEnum):
    """What a template does when one of its jobs fails for good (its last attempt)."""

    KEEP = "keep"  # keep firing
    DISABLE = "disable"  # switch the template off, with an event saying why


def job_failure_policy(value: JobFailurePolicy | str) -> JobFailurePolicy:
    """``value`` as a policy, or a ``ValidationError`` naming ``on_job_failure``."""
    try:
        return JobFailurePolicy(value)
    except ValueError:
        choices = ", ".join(p.value for p in JobFailurePolicy)
        raise ValidationError("on_job_failure", f"must be one of {choices}") from None


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
    on_job_failure: JobFailurePolicy = JobFailurePolicy.KEEP

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
    load_timezone(timezone)  # an interval keeps its zone too (for previews): check it
    start_at = check_schedule_time(start_at, "start_at")
    end_at = None if end_at is None else check_schedule_time(end_at, "end_at")
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
        nxt = self.cron.next_after(max(after, self.start_at - _US))
        if nxt is None or (self.end_at is not None and nxt > self.end_at):
            return None
        return nxt

    def count_between(self, low: datetime, high: datetime) -> int:
        low = max(low, self.start_at)
        high = high if self.end_at is None else min(high, self.end_at + _US)
        return self.cron.count_between(low, high)


def _bounded_cron(cron: CronSchedule, start_at: datetime, end_at: datetime | None) -> Schedule:
    if end_at is not None and end_at < start_at:
        raise ValidationError("end_at", "must not be before start_at")
    return _BoundedCron(cron, start_at, end_at)


def first_tick(schedule: Schedule, now: datetime) -> datetime | None:
    """A new or re-activated template's first tick: never one before ``now``.

    A past ``start_at`` is not backfilled, for an interval (it only sets the phase) as
    for a cron. An interval may fire at ``now`` itself (its ``start_at`` defaults to
    now: it fires at once); a cron fires at its first match strictly after ``now``.
    """
    if isinstance(schedule, IntervalSchedule):
        return schedule.next_after(now - _US)
    return schedule.next_after(now)


@dataclass(frozen=True, slots=True)
class FirePlan:
    """The instances to create now (their ``scheduled_for``) and the tick to wait for next.

    ``next_run_at`` is in the past when on-time ticks were left for the next round.
    """

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
    until: datetime | None = None,
) -> FirePlan:
    """Which ticks from ``due_at`` up to ``now`` become instances, per ``policy``.

    A tick at most ``grace_seconds`` old (never less than 1 s) is on time and runs, up
    to :data:`MAX_ON_TIME_PER_ROUND` per round. Older ones were missed: ``skip`` runs
    none, ``run_once`` the latest, ``catch_up`` the latest ``max_catchup``.

    ``until`` (at or after ``now``): ticks up to it are planned too, created ahead of
    their time (the lookahead); what counts as missed is still judged from ``now``.
    """
    if not 1 <= max_catchup <= MAX_CATCHUP:
        raise ValidationError("max_catchup", f"must be between 1 and {MAX_CATCHUP}")
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationError("grace_seconds", f"must be between 0 and {MAX_GRACE_SECONDS:.0f}")
    cutoff = now - timedelta(seconds=max(grace_seconds, MIN_GRACE_SECONDS))
    keep = {MisfirePolicy.SKIP: 0, MisfirePolicy.RUN_ONCE: 1}.get(policy, max_catchup)
    missed, missed_count = _latest_missed(schedule, due_at, cutoff, keep)
    first_on_time = due_at if due_at >= cutoff else schedule.next_after(cutoff - _US)
    end = now if until is None else max(now, until)
    on_time, upcoming, _ = _walk(schedule, first_on_time, end, MAX_ON_TIME_PER_ROUND)
    return FirePlan(missed + on_time, upcoming, dropped=missed_count - len(missed))


def _walk(
    schedule: Schedule, start: datetime | None, end: datetime, limit: int, *, before: bool = False
) -> tuple[list[datetime], datetime | None, bool]:
    """Up to ``limit`` ticks from ``start`` up to ``end`` (inclusive, or not if ``before``),
    the first tick not returned, and whether the walk reached ``end``."""
    ticks: list[datetime] = []
    tick = start
    while tick is not None and (tick < end or (tick == end and not before)):
        if len(ticks) == limit:
            return ticks, tick, False
        ticks.append(tick)
        tick = schedule.next_after(tick)
    return ticks, tick, True


def _latest_missed(
    schedule: Schedule, due_at: datetime, cutoff: datetime, keep: int
) -> tuple[list[datetime], int]:
    """The latest ``keep`` ticks in ``[due_at, cutoff)`` and how many there are in all,
    without walking them one by one when there are more than :data:`MAX_TICKS_WALKED`."""
    if due_at >= cutoff:
        return [], 0
    ticks, _, complete = _walk(schedule, due_at, cutoff, MAX_TICKS_WALKED, before=True)
    if complete:
        return (ticks[-keep:] if keep else []), len(ticks)
    count = getattr(schedule, "count_between", None)
    total = max(count(due_at, cutoff), len(ticks)) if count is not None else len(ticks)
    if keep == 0:
        return [], total
    start = _window_for(schedule, due_at, cutoff, keep)
    tail, _, _ = _walk(
        schedule, schedule.next_after(start - _US), cutoff, MAX_TICKS_WALKED, before=True
    )
    return tail[-keep:], total


def _window_for(schedule: Schedule, due_at: datetime, cutoff: datetime, keep: int) -> datetime:
    """A start ``s`` with about ``keep`` (at least 1) ticks in ``[s, cutoff)``: widened from
    1 s by doubling, then narrowed by bisection, counting ticks by arithmetic."""
    count = getattr(schedule, "count_between", None)
    if count is None:  # a schedule that cannot count: the last stretch of one walk
        return max(due_at, cutoff - timedelta(seconds=keep))
    width = timedelta(seconds=1)
    while cutoff - width > due_at and count(cutoff - width, cutoff) < keep:
        width *= 2
    if cutoff - width <= due_at:
        return due_at
    low, high = cutoff - width, cutoff - width / 2  # count(low) >= keep > count(high)
    while high - low > timedelta(milliseconds=1) and count(low, cutoff) > MAX_TICKS_WALKED // 2:
        mid = low + (high - low) / 2
        if count(mid, cutoff) >= keep:
            low = mid
        else:
            high = mid
    return low


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
