"""Schedules (core/schedules.py): one-time, interval and cron, including the DST rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill.core.errors import ValidationError
from taskmill.core.schedules import (
    MAX_INTERVAL_SECONDS,
    MAX_SCHEDULE_TIME,
    CronSchedule,
    IntervalSchedule,
    OneTimeSchedule,
    Schedule,
    load_timezone,
    normalize_cron,
    utc,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


def _z(hour: int, minute: int = 0, second: int = 0, *, day: tuple[int, int] = (5, 1)) -> datetime:
    return datetime(2026, day[0], day[1], hour, minute, second, tzinfo=UTC)


def _take(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    current = after
    for _ in range(count):
        nxt = schedule.next_after(current)
        assert nxt is not None
        out.append(nxt)
        current = nxt
    return out


def _local_day_fires(expression: str, zone: str, day: datetime) -> list[datetime]:
    """Every fire of ``expression`` from local midnight of ``day`` to the next local midnight."""
    tz = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    following = day + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=tz).astimezone(UTC)
    schedule = CronSchedule(expression, zone)
    fires: list[datetime] = []
    nxt = schedule.next_after(start - US)
    while nxt is not None and nxt < end:
        fires.append(nxt)
        nxt = schedule.next_after(nxt)
    return fires


# --- utc() ---------------------------------------------------------------------------


def test_utc_naive_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        utc(datetime(2026, 1, 1))
    assert info.value.field == "datetime"


def test_utc_unrepresentable_instant_rejected() -> None:
    with pytest.raises(ValidationError, match="outside the range") as info:
        utc(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))
    assert info.value.field == "datetime"


def test_utc_converts_offset_to_utc() -> None:
    value = utc(datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert value == _z(10, day=(1, 1))
    assert value.tzinfo is UTC


# --- OneTimeSchedule ---------------------------------------------------------------------


def test_one_time_next_after_before_run_at_returns_run_at() -> None:
    assert OneTimeSchedule(T0).next_after(T0 - timedelta(days=3)) == T0
    assert OneTimeSchedule(T0).next_after(T0 - US) == T0


def test_one_time_next_after_at_run_at_is_done() -> None:
    assert OneTimeSchedule(T0).next_after(T0) is None


def test_one_time_next_after_past_run_at_is_done() -> None:
    assert OneTimeSchedule(T0).next_after(T0 + timedelta(seconds=1)) is None


# --- IntervalSchedule ----------------------------------------------------------------------


def test_interval_next_after_before_start_returns_start() -> None:
    schedule = IntervalSchedule(60, start_at=T0)
    assert schedule.next_after(T0 - timedelta(hours=5)) == T0
    assert schedule.next_after(T0 - US) == T0


def test_interval_next_after_is_strictly_after() -> None:
    schedule = IntervalSchedule(60, start_at=T0)
    assert schedule.next_after(T0) == T0 + timedelta(seconds=60)
    assert schedule.next_after(T0 + timedelta(seconds=60)) == T0 + timedelta(seconds=120)
    assert schedule.next_after(T0 + timedelta(seconds=59.999)) == T0 + timedelta(seconds=60)
    assert schedule.next_after(T0 + timedelta(seconds=60.001)) == T0 + timedelta(seconds=120)


def test_interval_next_after_stays_on_grid() -> None:
    schedule = IntervalSchedule(90, start_at=T0)
    fires = _take(schedule, T0 - US, 5)
    assert fires == [T0 + timedelta(seconds=90 * k) for k in range(5)]
    later = schedule.next_after(T0 + timedelta(days=1, seconds=7))
    assert later is not None
    assert (later - T0).total_seconds() % 90 == 0
    assert timedelta(0) < later - (T0 + timedelta(days=1, seconds=7)) <= timedelta(seconds=90)


def test_interval_next_after_fractional_seconds() -> None:
    schedule = IntervalSchedule(0.5, start_at=T0)
    assert _take(schedule, T0, 3) == [T0 + timedelta(seconds=s) for s in (0.5, 1.0, 1.5)]


def test_interval_next_after_end_at_inclusive() -> None:
    schedule = IntervalSchedule(60, start_at=T0, end_at=T0 + timedelta(minutes=2))
    assert schedule.next_after(T0) == T0 + timedelta(minutes=1)
    assert schedule.next_after(T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=2)
    assert schedule.next_after(T0 + timedelta(minutes=2)) is None


def test_interval_next_after_end_at_between_ticks() -> None:
    schedule = IntervalSchedule(60, start_at=T0, end_at=T0 + timedelta(seconds=90))
    assert schedule.next_after(T0 + timedelta(seconds=60)) is None


def test_interval_next_after_end_at_equal_start_fires_once() -> None:
    schedule = IntervalSchedule(60, start_at=T0, end_at=T0)
    assert schedule.next_after(T0 - US) == T0
    assert schedule.next_after(T0) is None


@pytest.mark.parametrize("seconds", [0, -1, -0.001, float("nan")])
def test_interval_invalid_seconds_raise(seconds: float) -> None:
    with pytest.raises(ValidationError) as info:
        IntervalSchedule(seconds, start_at=T0)
    assert info.value.field == "interval_seconds"


def test_interval_end_before_start_raises() -> None:
    with pytest.raises(ValidationError) as info:
        IntervalSchedule(60, start_at=T0, end_at=T0 - US)
    assert info.value.field == "end_at"


# --- CronSchedule: basics ------------------------------------------------------------------


def test_cron_next_after_five_fields_every_minute() -> None:
    schedule = CronSchedule("* * * * *")
    assert _take(schedule, _z(12, 0, 30), 3) == [_z(12, 1), _z(12, 2), _z(12, 3)]


def test_cron_next_after_is_strictly_after() -> None:
    schedule = CronSchedule("*/5 * * * *")
    assert schedule.next_after(_z(12, 0)) == _z(12, 5)
    assert schedule.next_after(_z(12, 0) - US) == _z(12, 0)


def test_cron_next_after_returns_aware_utc() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    nxt = CronSchedule("0 9 * * *", "Europe/Berlin").next_after(
        datetime(2026, 5, 1, 8, 0, tzinfo=berlin)
    )
    assert nxt == _z(7, 0)  # 09:00 CEST (+02:00)
    assert nxt.tzinfo is UTC


def test_cron_next_after_naive_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        CronSchedule("* * * * *").next_after(datetime(2026, 1, 1))
    assert info.value.field == "datetime"


def test_cron_next_after_six_fields_seconds_first() -> None:
    schedule = CronSchedule("*/30 * * * * *")
    assert _take(schedule, _z(12, 0, 0), 4) == [
        _z(12, 0, 30),
        _z(12, 1, 0),
        _z(12, 1, 30),
        _z(12, 2, 0),
    ]


def test_cron_next_after_six_fields_daily_midnight() -> None:
    schedule = CronSchedule("0 0 0 * * *")
    assert _take(schedule, _z(12, 0), 3) == [
        datetime(2026, 5, 2, tzinfo=UTC),
        datetime(2026, 5, 3, tzinfo=UTC),
        datetime(2026, 5, 4, tzinfo=UTC),
    ]


def test_cron_next_after_six_fields_specific_second() -> None:
    schedule = CronSchedule("15 30 * * * *")
    assert _take(schedule, _z(12, 0), 2) == [_z(12, 30, 15), _z(13, 30, 15)]


def test_cron_next_after_in_zone() -> None:
    schedule = CronSchedule("0 9 * * *", "America/New_York")
    assert schedule.next_after(_z(0, 0)) == _z(13, 0)  # 09:00 EDT (-04:00)


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", _z(12, 10), [_z(13), _z(14)]),
        ("@HOURLY", _z(12, 10), [_z(13), _z(14)]),
        ("@daily", _z(12, 10), [_z(0, day=(5, 2)), _z(0, day=(5, 3))]),
        ("@midnight", _z(12, 10), [_z(0, day=(5, 2)), _z(0, day=(5, 3))]),
        ("@monthly", _z(12, 10), [_z(0, day=(6, 1)), _z(0, day=(7, 1))]),
        (
            "@yearly",
            _z(12, 10),
            [datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)],
        ),
        ("@weekly", _z(12, 10), [_z(0, day=(5, 3)), _z(0, day=(5, 10))]),  # Sundays
    ],
)
def test_cron_next_after_aliases(alias: str, after: datetime, expected: list[datetime]) -> None:
    assert _take(CronSchedule(alias), after, 2) == expected


def test_normalize_cron_collapses_whitespace_and_expands_alias() -> None:
    assert normalize_cron("  */5   *  * * * ") == "*/5 * * * *"
    assert normalize_cron("@daily") == "0 0 * * *"
    assert normalize_cron("0 0 0 * * *") == "0 0 0 * * *"


@pytest.mark.parametrize(
    ("expression", "field_name"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 32 * *", "day"),
        ("* * 0 * *", "day"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "weekday"),
        ("*/0 * * * *", "minute"),
        ("61 * * * * *", "second"),
        ("0 60 * * * *", "minute"),
        ("0 0 25 * * *", "hour"),
        ("x * * * *", "minute"),
    ],
)
def test_cron_invalid_field_named(expression: str, field_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        CronSchedule(expression)
    assert info.value.field == "cron"
    assert f"invalid {field_name} field" in info.value.reason


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * * *", "@bogus", "@every 5m"])
def test_cron_wrong_field_count_rejected(expression: str) -> None:
    with pytest.raises(ValidationError) as info:
        CronSchedule(expression)
    assert info.value.field == "cron"
    assert "fields" in info.value.reason


def test_cron_impossible_date_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        CronSchedule("0 0 30 2 *")  # 30 February never happens
    assert info.value.field == "cron"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "Europe/Nowhere", "../etc/passwd"])
def test_cron_unknown_timezone_rejected(zone: str) -> None:
    with pytest.raises(ValidationError) as info:
        CronSchedule("* * * * *", zone)
    assert info.value.field == "timezone"


def test_load_timezone_custom_field_name() -> None:
    with pytest.raises(ValidationError) as info:
        load_timezone("Nope/Nope", field_name="template.timezone")
    assert info.value.field == "template.timezone"
    assert load_timezone("Europe/Berlin") == ZoneInfo("Europe/Berlin")


# --- CronSchedule: the DST rule ----------------------------------------------------------

SPRING_BERLIN = datetime(2026, 3, 29)
AUTUMN_BERLIN = datetime(2026, 10, 25)


def test_cron_dst_berlin_spring_fixed_time_in_gap_fires_once_after_gap() -> None:
    # 02:30 does not exist on 2026-03-29; it fires once at 03:00 CEST = 01:00Z.
    assert _local_day_fires("30 2 * * *", "Europe/Berlin", SPRING_BERLIN) == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    ]


def test_cron_dst_berlin_spring_rhythm_skips_missing_hour() -> None:
    fires = _local_day_fires("*/30 * * * *", "Europe/Berlin", SPRING_BERLIN)
    assert len(fires) == 46
    assert all(b - a == timedelta(minutes=30) for a, b in pairwise(fires))


def test_cron_dst_berlin_spring_fixed_time_outside_gap_unaffected() -> None:
    assert _local_day_fires("30 3 * * *", "Europe/Berlin", SPRING_BERLIN) == [
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    ]


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 30 2 * * *"])
def test_cron_dst_berlin_autumn_repeated_fixed_time_fires_once(expression: str) -> None:
    # 02:30 occurs at 00:30Z (CEST) and 01:30Z (CET); only the first fires.
    assert _local_day_fires(expression, "Europe/Berlin", AUTUMN_BERLIN) == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    ]


def test_cron_dst_berlin_autumn_rhythm_fires_in_both_copies() -> None:
    fires = _local_day_fires("*/30 * * * *", "Europe/Berlin", AUTUMN_BERLIN)
    assert len(fires) == 50
    assert all(b - a == timedelta(minutes=30) for a, b in pairwise(fires))
    assert datetime(2026, 10, 25, 0, 30, tzinfo=UTC) in fires
    assert datetime(2026, 10, 25, 1, 30, tzinfo=UTC) in fires


def test_cron_dst_berlin_autumn_next_after_inside_first_pass() -> None:
    # At 02:40 CEST (00:40Z) the next */30 tick is 02:00 CET (01:00Z), an earlier wall time.
    schedule = CronSchedule("*/30 * * * *", "Europe/Berlin")
    assert schedule.next_after(datetime(2026, 10, 25, 0, 40, tzinfo=UTC)) == datetime(
        2026, 10, 25, 1, 0, tzinfo=UTC
    )


def test_cron_dst_new_york_fall_back_hourly_fires_25_times() -> None:
    fires = _local_day_fires("0 * * * *", "America/New_York", datetime(2026, 11, 1))
    assert len(fires) == 25
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(fires))


def test_cron_dst_new_york_spring_forward_hourly_fires_23_times() -> None:
    fires = _local_day_fires("0 * * * *", "America/New_York", datetime(2026, 3, 8))
    assert len(fires) == 23
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(fires))


# Lord Howe Island shifts by 30 minutes: on 2026-04-05 02:00 (+11:00) falls back to
# 01:30 (+10:30), so 01:30-02:00 happens twice; on 2026-10-04 02:00 (+10:30) jumps to
# 02:30 (+11:00), so 02:00-02:30 does not exist.
LORD_HOWE = "Australia/Lord_Howe"
LH_FALL_BACK = datetime(2026, 4, 5)
LH_SPRING = datetime(2026, 10, 4)


def test_cron_dst_lord_howe_fall_back_hourly_on_the_hour_fires_24_times() -> None:
    # No :00 lies inside the repeated half hour, so every local hour fires exactly once.
    fires = _local_day_fires("0 * * * *", LORD_HOWE, LH_FALL_BACK)
    assert len(fires) == 24
    assert len({f.astimezone(ZoneInfo(LORD_HOWE)).hour for f in fires}) == 24


def test_cron_dst_lord_howe_fall_back_hourly_half_past_fires_25_times() -> None:
    # 01:30 occurs twice and the rhythm rule fires both.
    fires = _local_day_fires("30 * * * *", LORD_HOWE, LH_FALL_BACK)
    assert len(fires) == 25
    assert datetime(2026, 4, 4, 14, 30, tzinfo=UTC) in fires  # 01:30 +11:00
    assert datetime(2026, 4, 4, 15, 0, tzinfo=UTC) in fires  # 01:30 +10:30


def test_cron_dst_lord_howe_fall_back_repeated_fixed_time_fires_once() -> None:
    assert _local_day_fires("45 1 * * *", LORD_HOWE, LH_FALL_BACK) == [
        datetime(2026, 4, 4, 14, 45, tzinfo=UTC)  # the first 01:45 (+11:00)
    ]


def test_cron_dst_lord_howe_fall_back_fixed_0215_fires_once() -> None:
    assert _local_day_fires("15 2 * * *", LORD_HOWE, LH_FALL_BACK) == [
        datetime(2026, 4, 4, 15, 45, tzinfo=UTC)  # 02:15 +10:30
    ]


def test_cron_dst_lord_howe_spring_hourly_skips_missing_two_oclock() -> None:
    fires = _local_day_fires("0 * * * *", LORD_HOWE, LH_SPRING)
    assert len(fires) == 23
    assert 2 not in {f.astimezone(ZoneInfo(LORD_HOWE)).hour for f in fires}


def test_cron_dst_lord_howe_spring_fixed_0215_fires_once_after_gap() -> None:
    # 02:15 does not exist; it fires once at the first valid instant, 02:30 +11:00.
    assert _local_day_fires("15 2 * * *", LORD_HOWE, LH_SPRING) == [
        datetime(2026, 10, 3, 15, 30, tzinfo=UTC)
    ]


def test_cron_dst_lord_howe_spring_quarter_hours_fire_94_times() -> None:
    fires = _local_day_fires("*/15 * * * *", LORD_HOWE, LH_SPRING)
    assert len(fires) == 96 - 2  # 02:00 and 02:15 do not exist


# --- property: next_after is strictly increasing and UTC -------------------------------


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(min_value=low, max_value=high)
    return st.one_of(
        st.just("*"),
        number.map(str),
        st.integers(min_value=1, max_value=max(1, (high - low) // 2)).map(lambda n: f"*/{n}"),
        st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}"),
        st.lists(number, min_size=2, max_size=3, unique=True).map(
            lambda xs: ",".join(map(str, sorted(xs)))
        ),
    )


_expressions = st.builds(
    lambda second, minute, hour, day, weekday: " ".join(
        [*([second] if second is not None else []), minute, hour, day, "*", weekday]
    ),
    st.none() | st.sampled_from(["0", "*/20", "15,45"]),
    _field(0, 59),
    _field(0, 23),
    st.sampled_from(["*", "1", "15", "28", "*/10", "1-7"]),
    st.sampled_from(["*", "0", "1-5", "6"]),
)
_TRANSITIONS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),  # America/New_York spring forward
    datetime(2026, 3, 29, 1, tzinfo=UTC),  # Europe/Berlin spring forward
    datetime(2026, 4, 4, 15, tzinfo=UTC),  # Australia/Lord_Howe fall back
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Australia/Lord_Howe spring forward
    datetime(2026, 10, 25, 1, tzinfo=UTC),  # Europe/Berlin fall back
    datetime(2026, 11, 1, 6, tzinfo=UTC),  # America/New_York fall back
]
# Uniform 2026 instants rarely land near a clock change, so half of them are drawn there.
_instants = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    st.builds(
        lambda t, s: t + timedelta(seconds=s),
        st.sampled_from(_TRANSITIONS),
        st.integers(min_value=-4 * 3600, max_value=4 * 3600),
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    expression=_expressions,
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", LORD_HOWE]),
    start=_instants,
)
def test_cron_next_after_property_strictly_increasing_utc(
    expression: str, zone: str, start: datetime
) -> None:
    schedule = CronSchedule(expression, zone)
    previous = start
    for _ in range(50):
        nxt = schedule.next_after(previous)
        assert nxt is not None
        assert nxt.tzinfo is not None
        assert nxt.utcoffset() == timedelta(0)
        assert nxt > previous
        previous = nxt


# --- issue 18: bounds, odd zones, never-firing expressions, day fields --------------------


@pytest.mark.parametrize("zone", ["America", "Europe", "Etc", "__pycache__", "zone.tab", "A" * 300])
def test_cron_tzdata_directory_or_file_is_unknown_zone(zone: str) -> None:
    """``America`` (a tzdata directory) was an IsADirectoryError: a 500."""
    with pytest.raises(ValidationError) as info:
        CronSchedule("* * * * *", zone)
    assert info.value.field == "timezone"
    assert "/" not in info.value.reason.replace("Nope/", "")  # no file system path


@pytest.mark.parametrize(
    "expression",
    ["0 0 0 */31 2 5#5", "0 0 * 2 1#5 ", "0 0 31 4 *"],
)
def test_cron_that_never_fires_is_refused(expression: str) -> None:
    """``0 0 0 */31 2 5#5`` (1 February and the fifth Friday) was an AssertionError."""
    if expression.strip() == "0 0 * 2 1#5":
        # A fifth Monday in February: every 28 years or so, so it does fire.
        assert CronSchedule(expression).next_after(T0) == datetime(2044, 2, 29, tzinfo=UTC)
        return
    with pytest.raises(ValidationError) as info:
        CronSchedule(expression)
    assert info.value.field == "cron"


def test_cron_rhythm_naming_only_missing_times_is_refused_quickly() -> None:
    # Every second of 02:xx on the last Sunday of March: Berlin skips all of them.
    with pytest.raises(ValidationError, match="never fires"):
        CronSchedule("* * 2 * 3 0L", "Europe/Berlin")


def test_cron_next_after_near_year_9000_returns_none() -> None:
    schedule = CronSchedule("0 0 1 1 *", "Pacific/Kiritimati")
    # 9000-01-01 00:00 at +14:00 is still in 8999 in UTC; the next one would not be.
    last = schedule.next_after(datetime(8999, 6, 1, tzinfo=UTC))
    assert last == datetime(8999, 12, 31, 10, 0, tzinfo=UTC)
    assert schedule.next_after(last) is None
    assert schedule.next_after(datetime(9999, 12, 31, 23, tzinfo=UTC)) is None


@pytest.mark.parametrize("seconds", [1e-7, 1e-9, float("inf"), float("nan"), -1.0, 4e8, 1e300])
def test_interval_out_of_bounds_is_refused(seconds: float) -> None:
    """1e-9 s was timedelta(0), and next_after raised ZeroDivisionError."""
    with pytest.raises(ValidationError) as info:
        IntervalSchedule(seconds, start_at=T0)
    assert info.value.field == "interval_seconds"


@pytest.mark.parametrize("seconds", [1e-6, 0.001, 1, 86_400.5, MAX_INTERVAL_SECONDS])
@pytest.mark.parametrize("start_year", [1, 2026, 8999])
def test_interval_next_after_never_raises_for_accepted_values(
    seconds: float, start_year: int
) -> None:
    start = datetime(start_year, 1, 1, tzinfo=UTC)
    schedule = IntervalSchedule(seconds, start_at=start)
    for after in (start, start + timedelta(days=365), datetime(8999, 12, 31, tzinfo=UTC)):
        nxt = schedule.next_after(after)
        assert nxt is None or after < nxt < MAX_SCHEDULE_TIME


@pytest.mark.parametrize(
    ("expression", "zone"),
    [("* * * * * *", "UTC"), ("*/7 3-5 * * 1-5", "UTC"), ("0 30 9 1,15 * 1", "Asia/Tokyo")],
)
def test_count_between_matches_a_walk(expression: str, zone: str) -> None:
    schedule = CronSchedule(expression, zone)
    low, high = T0 + timedelta(seconds=0.5), T0 + timedelta(days=40, hours=3)
    if expression.startswith("* "):
        high = T0 + timedelta(hours=5, seconds=7)
    walked, tick = 0, schedule.next_after(low)
    while tick is not None and tick < high:
        walked, tick = walked + 1, schedule.next_after(tick)
    assert schedule.count_between(low, high) == walked
    interval = IntervalSchedule(0.37, start_at=T0, end_at=T0 + timedelta(hours=2))
    ticks = [T0 + k * timedelta(seconds=0.37) for k in range(100_000)]
    ticks = [t for t in ticks if t <= T0 + timedelta(hours=2)]
    assert interval.count_between(low, high) == sum(low <= t < high for t in ticks)


# Day-of-month and day-of-week combine as in Vixie/Debian cron (and cronsim): when both
# are restricted a day matching EITHER fires; when either field starts with ``*``
# (``*``, ``*/2``) a day must match BOTH.
@pytest.mark.parametrize(
    ("expression", "days"),
    [
        # 13th OR Friday (May 2026: Fridays 1, 8, 15, 22, 29)
        ("0 0 13 5 5", [1, 8, 13, 15, 22, 29]),
        # day-of-month starts with *: odd days AND Friday
        ("0 0 */2 5 5", [1, 15, 29]),
        # day-of-week starts with *: 13th AND every day of the week
        ("0 0 13 5 *", [13]),
        # day-of-week */2 (Sun, Tue, Thu, Sat) AND 1st-10th
        ("0 0 1-10 5 */2", [2, 3, 5, 7, 9, 10]),
        # both restricted: 1st-3rd OR Monday (4, 11, 18, 25)
        ("0 0 1-3 5 1", [1, 2, 3, 4, 11, 18, 25]),
    ],
)
def test_cron_day_of_month_and_day_of_week_combine_like_vixie_cron(
    expression: str, days: list[int]
) -> None:
    schedule = CronSchedule(expression)
    fires, tick = [], schedule.next_after(datetime(2026, 4, 30, tzinfo=UTC))
    while tick is not None and tick < datetime(2026, 6, 1, tzinfo=UTC):
        fires.append(tick.day)
        tick = schedule.next_after(tick)
    assert fires == days
