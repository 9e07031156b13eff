"""plan_fires (core/templates.py): on-time ticks and the misfire policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import ScheduleType
from taskmill.core.schedules import CronSchedule, IntervalSchedule, Schedule
from taskmill.core.templates import (
    MAX_TICKS_WALKED,
    MisfirePolicy,
    build_schedule,
    plan_fires,
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
    # With the default 60 s grace the 12:10 tick (30 s old) is on time and always runs.
    plan = plan_fires(_every_minute(kind), START, MISSED_NOW, policy, max_catchup=3)
    expected = {
        MisfirePolicy.SKIP: [MISSED_TICKS[-1]],
        MisfirePolicy.RUN_ONCE: [MISSED_TICKS[-1]],
        MisfirePolicy.CATCH_UP: MISSED_TICKS[-3:],
    }[policy]
    assert plan.fire_at == expected
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


def test_plan_fires_walk_bound_jumps_to_future() -> None:
    schedule = CronSchedule("* * * * * *")  # every second, missed for a day
    now = START + timedelta(days=1, milliseconds=500)
    plan = plan_fires(schedule, START, now, MisfirePolicy.SKIP, grace_seconds=0)
    assert MAX_TICKS_WALKED < 86_400
    assert plan.fire_at == []
    assert plan.next_run_at == START + timedelta(days=1, seconds=1)


def test_plan_fires_run_once_beyond_walk_bound_runs_latest_missed() -> None:
    schedule = CronSchedule("* * * * * *")
    now = START + timedelta(days=1, milliseconds=500)
    plan = plan_fires(schedule, START, now, MisfirePolicy.RUN_ONCE, grace_seconds=0)
    assert plan.fire_at == [START + timedelta(days=1)]


def test_plan_fires_beyond_walk_bound_keeps_on_time_ticks() -> None:
    schedule = CronSchedule("* * * * * *")
    now = START + timedelta(days=1)
    plan = plan_fires(schedule, START, now, MisfirePolicy.SKIP, grace_seconds=2)
    assert plan.fire_at == [now - timedelta(seconds=s) for s in (2, 1, 0)]


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
