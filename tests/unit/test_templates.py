"""plan_fires (core/templates.py): on-time ticks and the misfire policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import ScheduleType
from taskmill.core.schedules import CronSchedule, IntervalSchedule, Schedule
from taskmill.core.templates import (
    MAX_CATCHUP,
    MAX_ON_TIME_PER_ROUND,
    MAX_TICKS_WALKED,
    MisfirePolicy,
    build_schedule,
    first_tick,
    plan_fires,
    preview_fires,
)

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _every_minute(kind: str) -> Schedule:
    if kind == "interval":
        return IntervalSchedule(60, start_at=START)
    return build_schedule(
        ScheduleType.CRON,
        cron_expression="* * * * *",
        interval_seconds=None,
        timezone="UTC",
        start_at=START,
        end_at=None,
    )


KINDS = ["interval", "cron"]


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_on_time_tick_runs(kind: str) -> None:
    now = START + timedelta(seconds=5)
    for policy in MisfirePolicy:
        plan = plan_fires(_every_minute(kind), START, now, policy)
        assert plan.fire_at == [START]
        assert plan.next_run_at == START + MINUTE


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_not_yet_due_fires_nothing(kind: str) -> None:
    now = START - timedelta(seconds=1)
    plan = plan_fires(_every_minute(kind), START, now, MisfirePolicy.CATCH_UP)
    assert plan.fire_at == []
    assert plan.next_run_at == START


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_tick_exactly_at_grace_is_on_time(kind: str) -> None:
    now = START + timedelta(seconds=60)  # START is 60 s old; START + 1 min is due now
    plan = plan_fires(_every_minute(kind), START, now, MisfirePolicy.SKIP, grace_seconds=60)
    assert plan.fire_at == [START, START + MINUTE]
    assert plan.next_run_at == START + 2 * MINUTE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_plan_fires_until_adds_ticks_ahead_and_judges_misses_from_now(
    kind: str, policy: MisfirePolicy
) -> None:
    """The lookahead plans the ticks up to ``until`` too; which ticks were missed, and
    what the policy keeps of them, is what it is without it."""
    now = START + timedelta(minutes=10, seconds=30)
    at_tick = plan_fires(_every_minute(kind), START, now, policy, grace_seconds=10)
    ahead = plan_fires(
        _every_minute(kind), START, now, policy, grace_seconds=10, until=now + 2 * MINUTE
    )
    upcoming = [START + 11 * MINUTE, START + 12 * MINUTE]
    assert ahead.fire_at == at_tick.fire_at + upcoming
    assert ahead.dropped == at_tick.dropped
    assert ahead.next_run_at == START + 13 * MINUTE


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_until_before_now_is_now(kind: str) -> None:
    now = START + timedelta(seconds=5)
    plan = plan_fires(_every_minute(kind), START, now, MisfirePolicy.RUN_ONCE, until=START)
    assert plan.fire_at == [START] and plan.next_run_at == START + MINUTE


# Ticks 12:00 ... 12:10 were all missed: at 12:10:30 with 10 s of grace none is on time.
MISSED_NOW = START + timedelta(minutes=10, seconds=30)
MISSED_TICKS = [START + k * MINUTE for k in range(11)]


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_skip_runs_none_of_missed(kind: str) -> None:
    plan = plan_fires(_every_minute(kind), START, MISSED_NOW, MisfirePolicy.SKIP, grace_seconds=10)
    assert plan.fire_at == []
    assert plan.next_run_at == START + 11 * MINUTE
    assert plan.next_run_at > MISSED_NOW


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_run_once_runs_latest_missed(kind: str) -> None:
    plan = plan_fires(
        _every_minute(kind), START, MISSED_NOW, MisfirePolicy.RUN_ONCE, grace_seconds=10
    )
    assert plan.fire_at == [MISSED_TICKS[-1]]
    assert plan.next_run_at == START + 11 * MINUTE
    assert plan.next_run_at > MISSED_NOW


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_catch_up_runs_latest_max_catchup(kind: str) -> None:
    plan = plan_fires(
        _every_minute(kind),
        START,
        MISSED_NOW,
        MisfirePolicy.CATCH_UP,
        max_catchup=3,
        grace_seconds=10,
    )
    assert plan.fire_at == MISSED_TICKS[-3:]
    assert plan.next_run_at == START + 11 * MINUTE
    assert plan.next_run_at > MISSED_NOW


@pytest.mark.parametrize("kind", KINDS)
def test_plan_fires_catch_up_runs_all_when_fewer_than_max(kind: str) -> None:
    plan = plan_fires(
        _every_minute(kind),
        START,
        MISSED_NOW,
        MisfirePolicy.CATCH_UP,
        max_catchup=50,
        grace_seconds=10,
    )
    assert plan.fire_at == MISSED_TICKS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_plan_fires_default_grace_keeps_on_time_tick(kind: str, policy: MisfirePolicy) -> None:
    # With the default 60 s grace the 12:10 tick (30 s old) is on time and always runs;
    # the policy applies to the 10 missed ones (12:00 .. 12:09) on top of it: run_once
    # runs the latest of them, catch_up the latest max_catchup (3) of them.
    plan = plan_fires(_every_minute(kind), START, MISSED_NOW, policy, max_catchup=3)
    expected = {
        MisfirePolicy.SKIP: [],
        MisfirePolicy.RUN_ONCE: MISSED_TICKS[-2:-1],
        MisfirePolicy.CATCH_UP: MISSED_TICKS[-4:-1],
    }[policy]
    assert plan.fire_at == [*expected, MISSED_TICKS[-1]]
    assert plan.dropped == 10 - len(expected)
    assert plan.next_run_at == START + 11 * MINUTE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("policy", list(MisfirePolicy))
@pytest.mark.parametrize("late_seconds", [0, 1, 59, 60, 61, 600, 3_600, 86_400])
def test_plan_fires_next_run_at_always_in_future(
    kind: str, policy: MisfirePolicy, late_seconds: int
) -> None:
    now = START + timedelta(seconds=late_seconds)
    plan = plan_fires(_every_minute(kind), START, now, policy, max_catchup=3, grace_seconds=10)
    assert plan.next_run_at is not None
    assert plan.next_run_at > now
    assert all(t <= now for t in plan.fire_at)
    assert plan.fire_at == sorted(set(plan.fire_at))


class _CountingSchedule:
    """A schedule that counts the ticks walked (``next_after`` calls) of the one it wraps."""

    def __init__(self, schedule: CronSchedule | IntervalSchedule) -> None:
        self.schedule, self.steps = schedule, 0

    def next_after(self, after: datetime) -> datetime | None:
        self.steps += 1
        return self.schedule.next_after(after)

    def count_between(self, start: datetime, end: datetime) -> int:
        return self.schedule.count_between(start, end)


def test_plan_fires_per_second_day_outage_counts_every_dropped_tick_without_walking_them() -> None:
    """After 24 h down, a per-second schedule's ~86,400 missed ticks are all counted (the
    warning said '3 dropped'), by arithmetic: no walk of every tick."""
    day_later = START + timedelta(days=1, milliseconds=500)
    for counted in (CronSchedule("* * * * * *"), IntervalSchedule(1, start_at=START)):
        schedule = _CountingSchedule(counted)
        plan = plan_fires(schedule, START, day_later, MisfirePolicy.SKIP, grace_seconds=0)
        # Two bounded walks (the first ticks, then the last few), never all 86,400.
        assert schedule.steps <= 2 * MAX_TICKS_WALKED + 10 < 86_400
        # 12:00:00 tomorrow is 0.5 s old: on time (the 1 s floor); 86,400 before it missed.
        assert plan.fire_at == [START + timedelta(days=1)]
        assert plan.dropped == 86_400
        assert plan.next_run_at == START + timedelta(days=1, seconds=1)


def test_plan_fires_run_once_beyond_walk_bound_runs_latest_missed() -> None:
    schedule = CronSchedule("* * * * * *")
    now = START + timedelta(days=1, milliseconds=500)
    plan = plan_fires(schedule, START, now, MisfirePolicy.RUN_ONCE, grace_seconds=0)
    assert plan.fire_at == [START + timedelta(days=1, seconds=-1), START + timedelta(days=1)]
    assert plan.dropped == 86_399


@pytest.mark.parametrize("max_catchup", [1, 7, 1000])
def test_plan_fires_catch_up_beyond_walk_bound_runs_latest_max_catchup(max_catchup: int) -> None:
    # Business hours only, every second: the outage ends at night, so the latest missed
    # ticks are yesterday's 17:59:xx, far from the cutoff.
    schedule = CronSchedule("* * 9-17 * * *")
    due = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    now = datetime(2026, 5, 3, 22, 0, tzinfo=UTC)
    plan = plan_fires(schedule, due, now, MisfirePolicy.CATCH_UP, max_catchup=max_catchup)
    last = datetime(2026, 5, 3, 17, 59, 59, tzinfo=UTC)
    assert plan.fire_at == [last - timedelta(seconds=k) for k in reversed(range(max_catchup))]
    assert plan.dropped == 3 * 9 * 3600 - max_catchup
    assert plan.next_run_at == datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def test_plan_fires_beyond_walk_bound_keeps_on_time_ticks() -> None:
    schedule = CronSchedule("* * * * * *")
    now = START + timedelta(days=1)
    plan = plan_fires(schedule, START, now, MisfirePolicy.SKIP, grace_seconds=2)
    assert plan.fire_at == [now - timedelta(seconds=s) for s in (2, 1, 0)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("late", "fired", "dropped"), [(0.007, 1, 0), (1.5, 0, 1)])
def test_plan_fires_zero_grace_still_runs_a_tick_read_a_few_ms_late(
    kind: str, late: float, fired: int, dropped: int
) -> None:
    """grace 0 made ``skip`` templates never fire: a tick is always read a bit late. A
    tick read within the 1 s floor is on time; later, it was missed."""
    now = START + timedelta(seconds=late)
    plan = plan_fires(_every_minute(kind), START, now, MisfirePolicy.SKIP, grace_seconds=0)
    assert (plan.fire_at, plan.dropped) == ([START] * fired, dropped)


def test_plan_fires_bounds_on_time_ticks_per_round_and_leaves_the_rest_due() -> None:
    """interval 0.001 s with 60 s of grace made ~60,000 jobs in one round."""
    schedule = IntervalSchedule(0.001, start_at=START)
    now = START + timedelta(seconds=30)
    first = plan_fires(schedule, START, now, MisfirePolicy.CATCH_UP, max_catchup=5)
    assert first.fire_at == [START + k * timedelta(milliseconds=1) for k in range(100)]
    assert len(first.fire_at) == MAX_ON_TIME_PER_ROUND
    assert first.dropped == 0
    assert first.next_run_at == START + timedelta(milliseconds=100)  # due: next round
    assert first.next_run_at is not None
    second = plan_fires(schedule, first.next_run_at, now, MisfirePolicy.CATCH_UP)
    assert second.fire_at[0] == START + timedelta(milliseconds=100)  # nothing lost


def test_plan_fires_refuses_out_of_range_settings() -> None:
    schedule = IntervalSchedule(60, start_at=START)
    for bad in (0, MAX_CATCHUP + 1):
        with pytest.raises(ValidationError) as info:
            plan_fires(schedule, START, START, MisfirePolicy.CATCH_UP, max_catchup=bad)
        assert info.value.field == "max_catchup"
    for grace in (-1.0, 86_401.0, float("nan")):
        with pytest.raises(ValidationError) as info:
            plan_fires(schedule, START, START, MisfirePolicy.SKIP, grace_seconds=grace)
        assert info.value.field == "grace_seconds"


@pytest.mark.parametrize("kind", KINDS)
def test_first_tick_never_backfills_a_past_start_at(kind: str) -> None:
    """An interval template with a past start_at backfilled 10 instances, a cron none:
    neither does now; the past start_at only sets the interval's phase."""
    now = START + timedelta(minutes=10, seconds=30)
    schedule = _every_minute(kind)
    assert first_tick(schedule, now) == START + 11 * MINUTE
    on_tick = START + 10 * MINUTE  # an interval fires at once, a cron at its next match
    assert first_tick(schedule, on_tick) == on_tick + (MINUTE if kind == "cron" else 0 * MINUTE)
    future = IntervalSchedule(60, start_at=now + MINUTE)
    assert first_tick(future, now) == now + MINUTE


def test_plan_fires_ended_schedule_has_no_next_run() -> None:
    schedule = IntervalSchedule(60, start_at=START, end_at=START + 2 * MINUTE)
    now = START + 2 * MINUTE + timedelta(seconds=1)
    plan = plan_fires(schedule, START, now, MisfirePolicy.CATCH_UP)
    assert plan.fire_at == [START, START + MINUTE, START + 2 * MINUTE]
    assert plan.next_run_at is None


def test_build_schedule_cron_respects_start_and_end() -> None:
    schedule = build_schedule(
        ScheduleType.CRON,
        cron_expression="0 * * * *",
        interval_seconds=None,
        timezone="UTC",
        start_at=START + timedelta(minutes=30),
        end_at=START + timedelta(hours=2),
    )
    assert schedule.next_after(START - timedelta(days=1)) == START + timedelta(hours=1)
    assert schedule.next_after(START + timedelta(hours=1)) == START + timedelta(hours=2)
    assert schedule.next_after(START + timedelta(hours=2)) is None


def test_build_schedule_cron_start_on_tick_includes_it() -> None:
    schedule = build_schedule(
        ScheduleType.CRON,
        cron_expression="0 * * * *",
        interval_seconds=None,
        timezone="UTC",
        start_at=START,
        end_at=None,
    )
    assert schedule.next_after(START - timedelta(days=1)) == START


@pytest.mark.parametrize(
    ("schedule_type", "cron", "interval", "field"),
    [
        (ScheduleType.CRON, None, None, "cron"),
        (ScheduleType.CRON, "", None, "cron"),
        (ScheduleType.INTERVAL, None, None, "interval_seconds"),
        (ScheduleType.INTERVAL, None, 0.0, "interval_seconds"),
        (ScheduleType.INTERVAL, None, 1e-9, "interval_seconds"),  # timedelta(0)
        (ScheduleType.INTERVAL, None, float("nan"), "interval_seconds"),
        (ScheduleType.INTERVAL, None, 1e300, "interval_seconds"),
        (ScheduleType.IMMEDIATE, None, None, "schedule_type"),
        (ScheduleType.ONE_TIME, None, None, "schedule_type"),
    ],
)
def test_build_schedule_invalid_input_names_field(
    schedule_type: ScheduleType, cron: str | None, interval: float | None, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        build_schedule(
            schedule_type,
            cron_expression=cron,
            interval_seconds=interval,
            timezone="UTC",
            start_at=START,
            end_at=None,
        )
    assert info.value.field == field


def test_plan_fires_counts_dropped_ticks() -> None:
    from datetime import UTC, datetime, timedelta

    from taskmill.core.schedules import IntervalSchedule

    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    schedule = IntervalSchedule(60, start)
    now = start + timedelta(minutes=10, seconds=30)  # ticks 12:00 .. 12:10, all missed
    skip = plan_fires(schedule, start, now, MisfirePolicy.SKIP, grace_seconds=1)
    once = plan_fires(schedule, start, now, MisfirePolicy.RUN_ONCE, grace_seconds=1)
    assert (skip.dropped, len(skip.fire_at)) == (11, 0)
    assert (once.dropped, len(once.fire_at)) == (10, 1)


@pytest.mark.parametrize("kind", [ScheduleType.INTERVAL, ScheduleType.CRON])
@pytest.mark.parametrize("zone", ["Nope/Zone", "America", "Europe", "Etc", "__pycache__"])
def test_build_schedule_checks_the_timezone_of_every_kind(kind: ScheduleType, zone: str) -> None:
    """An interval template stored ``Nope/Zone``; a tzdata directory was a 500."""
    with pytest.raises(ValidationError) as info:
        build_schedule(
            kind,
            cron_expression="* * * * *",
            interval_seconds=60,
            timezone=zone,
            start_at=START,
            end_at=None,
        )
    assert info.value.field == "timezone"


@pytest.mark.parametrize("kind", [ScheduleType.INTERVAL, ScheduleType.CRON])
@pytest.mark.parametrize("field", ["start_at", "end_at"])
def test_build_schedule_refuses_times_from_year_9000(kind: ScheduleType, field: str) -> None:
    """start_at in 9999 was an OverflowError (500) on create and on preview."""
    far = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    start_at, end_at = (far, None) if field == "start_at" else (START, far)
    with pytest.raises(ValidationError) as info:
        build_schedule(
            kind,
            cron_expression="0 0 * * *",
            interval_seconds=60,
            timezone="Pacific/Kiritimati",
            start_at=start_at,
            end_at=end_at,
        )
    assert info.value.field == field


@pytest.mark.parametrize("kind", [ScheduleType.INTERVAL, ScheduleType.CRON])
def test_build_schedule_just_before_9000_ends_quietly(kind: ScheduleType) -> None:
    start = datetime(8999, 12, 31, 23, 0, tzinfo=UTC)
    schedule = build_schedule(
        kind,
        cron_expression="0 * * * *",
        interval_seconds=3600,
        timezone="Pacific/Kiritimati",
        start_at=start,
        end_at=None,
    )
    assert first_tick(schedule, start - timedelta(hours=1)) == start
    assert schedule.next_after(start) is None
    plan = plan_fires(schedule, start, start + timedelta(hours=5), MisfirePolicy.CATCH_UP)
    assert plan.next_run_at is None
    fires = preview_fires(schedule, "Pacific/Kiritimati", start - timedelta(hours=1), 10)
    assert [f.at for f in fires] == [start]
