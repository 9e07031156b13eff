"""The DST rule (docs/adr/0002) pinned against an oracle built from zoneinfo alone.

Part 1 is a table of every 2026 clock change in Europe/Berlin, America/New_York and
Australia/Lord_Howe (a 30-minute shift). For each transition day the expected fire
instants are computed by scanning every whole-minute UTC instant of the local day and
reading its wall time with zoneinfo; ``CronSchedule`` is never consulted for them.

Part 2 is a hypothesis property over random 5- and 6-field expressions: every fire's wall
time matches per ``cronsim`` on naive wall times (or ends a gap holding a match), and a
second oracle (naive cronsim walls mapped to instants with zoneinfo's ``fold``) confirms
that nothing was skipped between consecutive fires. It runs twice: once over broad random
draws, once concentrated on the skipped and repeated wall times.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill.core.schedules import CronSchedule

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
DST_ZONES = (BERLIN, NEW_YORK, LORD_HOWE)
SHORT_NAMES = {BERLIN: "berlin", NEW_YORK: "new_york", LORD_HOWE: "lord_howe", "UTC": "utc"}

US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


# --- the zoneinfo oracle -------------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def _wall(instant: datetime, zone: str) -> datetime:
    """The naive local wall time of ``instant`` in ``zone``."""
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def _offset(instant: datetime, zone: str) -> timedelta:
    offset = instant.astimezone(ZoneInfo(zone)).utcoffset()
    assert offset is not None
    return offset


@cache
def _transitions(zone: str, first_year: int, last_year: int) -> tuple[datetime, ...]:
    """Every instant in the years ``first_year..last_year`` at which ``zone``'s offset changes.

    Found by an hourly scan, then a per-minute scan of the hour where the offset moved.
    """
    found: list[datetime] = []
    probe = _utc(first_year, 1, 1)
    end = _utc(last_year + 1, 1, 1)
    while probe < end:
        if _offset(probe, zone) != _offset(probe + HOUR, zone):
            minute = probe + MINUTE
            while _offset(minute, zone) == _offset(probe, zone):
                minute += MINUTE
            found.append(minute)
        probe += HOUR
    return tuple(found)


def _local_day_bounds(zone: str, day: date) -> tuple[datetime, datetime]:
    """Local midnight of ``day`` and of the next day, as UTC instants."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    return start, end


def _minutes_of_local_day(zone: str, day: date) -> list[datetime]:
    """Every whole-minute UTC instant from local midnight of ``day`` up to the next one."""
    start, end = _local_day_bounds(zone, day)
    return [start + k * MINUTE for k in range(int((end - start) / MINUTE))]


def _expected_fixed(zone: str, day: date, at: time) -> list[datetime]:
    """A fixed time of day: its first occurrence, or the first valid instant after a gap."""
    target = datetime.combine(day, at)
    instants = _minutes_of_local_day(zone, day)
    occurrences = [i for i in instants if _wall(i, zone) == target]
    if occurrences:
        return occurrences[:1]
    return [next(i for i in instants if _wall(i, zone) > target)]


def _expected_rhythm(zone: str, day: date, every_minutes: int) -> list[datetime]:
    """A rhythm: every instant of the day whose local wall minute is a multiple of the step."""
    return [
        i for i in _minutes_of_local_day(zone, day) if _wall(i, zone).minute % every_minutes == 0
    ]


def _fires(expression: str, zone: str, day: date) -> list[datetime]:
    """What ``CronSchedule`` fires from local midnight of ``day`` to the next local midnight."""
    start, end = _local_day_bounds(zone, day)
    schedule = CronSchedule(expression, zone)
    fires: list[datetime] = []
    nxt = schedule.next_after(start - US)
    while nxt is not None and nxt < end:
        fires.append(nxt)
        nxt = schedule.next_after(nxt)
    return fires


# --- part 1: every 2026 transition ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """One clock change, with hand-checked facts the oracle must reproduce."""

    zone: str
    day: date
    spring: bool  # True: wall times in `window` are missing; False: they occur twice
    at: datetime  # the first instant with the new offset
    window: tuple[time, time]  # the missing / repeated wall times, end exclusive
    inside: time  # a wall time inside `window`
    inside_fires_at: datetime  # first valid instant after the gap, or first occurrence
    hourly: int  # fires of `0 * * * *` that local day
    half_hourly: int  # fires of `*/30 * * * *` that local day

    @property
    def label(self) -> str:
        shift = "spring" if self.spring else "fall"
        return f"{SHORT_NAMES[self.zone]}-{self.day.isoformat()}-{shift}"


TRANSITIONS_2026 = (
    # 02:00 CET -> 03:00 CEST
    Transition(
        zone=BERLIN,
        day=date(2026, 3, 29),
        spring=True,
        at=_utc(2026, 3, 29, 1, 0),
        window=(time(2, 0), time(3, 0)),
        inside=time(2, 30),
        inside_fires_at=_utc(2026, 3, 29, 1, 0),  # 03:00 CEST
        hourly=23,
        half_hourly=46,
    ),
    # 03:00 CEST -> 02:00 CET
    Transition(
        zone=BERLIN,
        day=date(2026, 10, 25),
        spring=False,
        at=_utc(2026, 10, 25, 1, 0),
        window=(time(2, 0), time(3, 0)),
        inside=time(2, 30),
        inside_fires_at=_utc(2026, 10, 25, 0, 30),  # 02:30 CEST
        hourly=25,
        half_hourly=50,
    ),
    # 02:00 EST -> 03:00 EDT
    Transition(
        zone=NEW_YORK,
        day=date(2026, 3, 8),
        spring=True,
        at=_utc(2026, 3, 8, 7, 0),
        window=(time(2, 0), time(3, 0)),
        inside=time(2, 30),
        inside_fires_at=_utc(2026, 3, 8, 7, 0),  # 03:00 EDT
        hourly=23,
        half_hourly=46,
    ),
    # 02:00 EDT -> 01:00 EST: the repeated hour is 01:00-02:00, so 02:30 is not inside it
    Transition(
        zone=NEW_YORK,
        day=date(2026, 11, 1),
        spring=False,
        at=_utc(2026, 11, 1, 6, 0),
        window=(time(1, 0), time(2, 0)),
        inside=time(1, 30),
        inside_fires_at=_utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        hourly=25,
        half_hourly=50,
    ),
    # 02:00 +11:00 -> 01:30 +10:30: 01:30-02:00 occurs twice, no :00 inside it
    Transition(
        zone=LORD_HOWE,
        day=date(2026, 4, 5),
        spring=False,
        at=_utc(2026, 4, 4, 15, 0),
        window=(time(1, 30), time(2, 0)),
        inside=time(1, 45),
        inside_fires_at=_utc(2026, 4, 4, 14, 45),  # 01:45 +11:00
        hourly=24,
        half_hourly=49,
    ),
    # 02:00 +10:30 -> 02:30 +11:00: 02:00 is missing, 02:30 exists
    Transition(
        zone=LORD_HOWE,
        day=date(2026, 10, 4),
        spring=True,
        at=_utc(2026, 10, 3, 15, 30),
        window=(time(2, 0), time(2, 30)),
        inside=time(2, 15),
        inside_fires_at=_utc(2026, 10, 3, 15, 30),  # 02:30 +11:00
        hourly=23,
        half_hourly=47,
    ),
)


def _six_field(expression: str) -> str:
    """The seconds-first twin of a 5-field expression."""
    return f"0 {expression}"


def _minus_minute(at: time) -> time:
    return (datetime.combine(date(2026, 1, 1), at) - MINUTE).time()


def _fixed_time_cases() -> list[object]:
    cases: list[object] = []
    for tr in TRANSITIONS_2026:
        start, end = tr.window
        times = {
            "inside": tr.inside,
            "window_start": start,
            "window_last_minute": _minus_minute(end),
            "window_end": end,
            "outside": time(9, 0),
        }
        for name, at in times.items():
            for form in ("5f", "6f"):
                cases.append(pytest.param(tr, at, form, id=f"{tr.label}-{name}-{at:%H%M}-{form}"))
    return cases


def _rhythm_cases() -> list[object]:
    return [
        pytest.param(tr, every, form, id=f"{tr.label}-every{every}min-{form}")
        for tr in TRANSITIONS_2026
        for every in (60, 30)
        for form in ("5f", "6f")
    ]


@pytest.mark.parametrize("zone", DST_ZONES)
def test_oracle_transitions_2026_match_table(zone: str) -> None:
    found = _transitions(zone, 2026, 2026)
    table = [tr for tr in TRANSITIONS_2026 if tr.zone == zone]
    assert list(found) == [tr.at for tr in table]
    for tr in table:
        assert _wall(tr.at, zone).date() == tr.day
        assert _offset(tr.at - SECOND, zone) != _offset(tr.at, zone)  # on the exact second
        assert (_offset(tr.at, zone) > _offset(tr.at - SECOND, zone)) is tr.spring
        # The window is what the clock skips (spring) or shows twice (fall).
        before, after = _wall(tr.at - MINUTE, zone) + MINUTE, _wall(tr.at, zone)
        window = (after, before) if not tr.spring else (before, after)
        assert (window[0].time(), window[1].time()) == tr.window
        assert tr.window[0] <= tr.inside < tr.window[1]


@pytest.mark.parametrize(("tr", "at", "form"), _fixed_time_cases())
def test_cron_next_after_dst_table_fixed_time(tr: Transition, at: time, form: str) -> None:
    expression = f"{at.minute} {at.hour} * * *"
    expected = _expected_fixed(tr.zone, tr.day, at)
    if at == tr.inside:
        assert expected == [tr.inside_fires_at]  # the oracle agrees with the hand check
    if at == time(9, 0):
        assert expected == [datetime.combine(tr.day, at, tzinfo=ZoneInfo(tr.zone)).astimezone(UTC)]
    fires = _fires(_six_field(expression) if form == "6f" else expression, tr.zone, tr.day)
    assert len(fires) == 1
    assert fires == expected
    if form == "6f":
        assert fires == _fires(expression, tr.zone, tr.day)


@pytest.mark.parametrize(("tr", "every", "form"), _rhythm_cases())
def test_cron_next_after_dst_table_rhythm(tr: Transition, every: int, form: str) -> None:
    expression = "0 * * * *" if every == 60 else "*/30 * * * *"
    expected = _expected_rhythm(tr.zone, tr.day, every)
    assert len(expected) == (tr.hourly if every == 60 else tr.half_hourly)
    fires = _fires(_six_field(expression) if form == "6f" else expression, tr.zone, tr.day)
    assert len(fires) == len(expected)
    assert fires == expected
    if form == "6f":
        assert fires == _fires(expression, tr.zone, tr.day)


def _instants_of_local_day(zone: str, day: date, step: timedelta) -> list[datetime]:
    start, end = _local_day_bounds(zone, day)
    return [start + k * step for k in range(int((end - start) / step))]


def _hour_of(tr: Transition) -> int:
    """The local hour that holds the transition's missing or repeated wall times."""
    return tr.window[0].hour


def _hour_fixed_cases() -> list[object]:
    return [
        pytest.param(tr, form, id=f"{tr.label}-{form}")
        for tr in TRANSITIONS_2026
        for form in ("every20s", "every10min", "range")
    ]


@pytest.mark.parametrize(("tr", "form"), _hour_fixed_cases())
def test_cron_next_after_dst_table_fixed_hour_keeps_rhythm(tr: Transition, form: str) -> None:
    """A fixed hour with a wildcard, step or range in the seconds or minutes is not a fixed
    time of day: it fires in both passes of a repeated hour and skips missing instants."""
    hour = _hour_of(tr)
    forms: dict[str, tuple[str, timedelta, Callable[[datetime], bool]]] = {
        "every20s": (f"*/20 * {hour} * * *", SECOND, lambda w: w.second % 20 == 0),
        "every10min": (f"*/10 {hour} * * *", MINUTE, lambda w: w.minute % 10 == 0),
        "range": (f"0-5 {hour} * * *", MINUTE, lambda w: w.minute <= 5),
    }
    expression, step, keep = forms[form]
    expected = [
        i
        for i in _instants_of_local_day(tr.zone, tr.day, step)
        if _wall(i, tr.zone).hour == hour and keep(_wall(i, tr.zone))
    ]
    assert _fires(expression, tr.zone, tr.day) == expected


def test_cron_next_after_berlin_fall_back_every_20s_in_hour_2_fires_in_both_passes() -> None:
    """The issue's example: 360 fires on 2026-10-25 (180 per pass of 02:00-03:00)."""
    fires = _fires("*/20 * 2 * * *", BERLIN, date(2026, 10, 25))
    assert len(fires) == 360
    assert (
        fires[0] == _utc(2026, 10, 25, 0, 0)
        and fires[-1] == _utc(2026, 10, 25, 1, 59) + 40 * SECOND
    )
    assert _fires("*/20 * 2 * * *", BERLIN, date(2026, 3, 29)) == []  # the gap is skipped


@pytest.mark.parametrize("tr", TRANSITIONS_2026, ids=lambda tr: tr.label)
def test_cron_next_after_dst_table_list_of_fixed_times(tr: Transition) -> None:
    """``0,30`` has no wildcard, step or range: each is a fixed time of day, and times
    missing in one gap collapse into one fire at its end."""
    hour = _hour_of(tr)
    times = (time(hour, 0), time(hour, 30))
    expected = sorted({i for at in times for i in _expected_fixed(tr.zone, tr.day, at)})
    assert _fires(f"0,30 {hour} * * *", tr.zone, tr.day) == expected
    assert _fires(f"0 0,30 {hour} * * *", tr.zone, tr.day) == expected


# --- part 2: property over random expressions ----------------------------------------------

PROPERTY_ZONES = (*DST_ZONES, "UTC")
# In these zones two clock changes are always more than 120 days apart, so a window
# shorter than that holds at most one and sees at most the two offsets at its ends.
ONE_TRANSITION_AT_MOST = timedelta(days=120)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(min_value=low, max_value=high)
    return st.one_of(
        st.just("*"),
        number.map(str),
        st.integers(min_value=1, max_value=max(1, (high - low) // 2)).map(lambda n: f"*/{n}"),
        st.tuples(number, st.integers(min_value=0, max_value=3)).map(
            lambda p: f"{p[0]}-{min(p[0] + p[1], high)}"
        ),
        st.lists(number, min_size=2, max_size=3, unique=True).map(
            lambda xs: ",".join(map(str, sorted(xs)))
        ),
    )


def _mostly_wild(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Day, month and weekday: mostly a wildcard, so that transition days come up."""
    return st.one_of(st.just("*"), st.just("*"), st.just("*"), strategy)


# Half the hour fields are wildcards or steps, half name hours (often those the three
# zones skip or repeat); with a plain minute (and second) those are fixed times of day.
_hours = st.one_of(
    st.one_of(st.just("*"), st.integers(min_value=1, max_value=11).map(lambda n: f"*/{n}")),
    st.one_of(
        _field(0, 23).filter(lambda f: "*" not in f),
        st.sampled_from(["1", "2", "1-2", "2-3", "1,2", "0-4", "2,14"]),
    ),
)
_five_fields = st.builds(
    lambda minute, hour, day, month, weekday: f"{minute} {hour} {day} {month} {weekday}",
    _field(0, 59),
    _hours,
    _mostly_wild(_field(1, 28)),
    _mostly_wild(_field(1, 12)),
    _mostly_wild(_field(0, 6)),
)
_expressions = st.one_of(
    _five_fields,
    st.builds(lambda second, rest: f"{second} {rest}", _field(0, 59), _five_fields),
)


def _instants_near(zone: str) -> st.SearchStrategy[datetime]:
    """Instants in 2026-2027; half of them within 6 hours of one of ``zone``'s transitions."""
    uniform = st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31, 23, 59, 59)
    ).map(lambda d: d.replace(tzinfo=UTC))
    transitions = _transitions(zone, 2026, 2027) if zone != "UTC" else ()
    if not transitions:
        return uniform
    seconds = st.one_of(
        st.integers(min_value=-6 * 3600, max_value=6 * 3600),
        # Just before the change, where the skipped or repeated wall times start (the
        # 30 fires of a per-second or per-minute expression span only that much).
        st.integers(min_value=-2 * 3600, max_value=0),
        st.sampled_from([-3601, -3600, -3599, -1801, -1800, -1799, -61, -1]),
    )
    near = st.builds(
        lambda t, s, us: t + timedelta(seconds=s, microseconds=us),
        st.sampled_from(transitions),
        seconds,
        st.sampled_from([0, 0, 1, 999_999]),
    )
    return st.one_of(uniform, near)


_zone_and_start = st.sampled_from(PROPERTY_ZONES).flatmap(
    lambda zone: st.tuples(st.just(zone), _instants_near(zone))
)


def _is_fixed_time(expression: str) -> bool:
    """The ADR's split (Debian cron's): a fixed time of day has no wildcard, step or range
    in its seconds, minutes and hours fields (a 5-field expression's seconds are 0)."""
    parts = expression.split()
    clock = parts[:3] if len(parts) == 6 else parts[:2]
    return all(not set(f) & set("*/-") for f in clock)


def _matches(expression: str, wall: datetime) -> bool:
    return next(CronSim(expression, wall - SECOND)) == wall


def _check_fire(expression: str, zone: str, fire: datetime) -> None:
    """``fire``'s wall time matches, or ``fire`` is where a gap holding a match ends."""
    wall = _wall(fire, zone)
    if _matches(expression, wall):
        return
    # Not a match: only allowed as the first instant after a spring-forward gap, for a
    # fixed-time expression, and only if some wall time skipped by that gap matches.
    assert _offset(fire, zone) > _offset(fire - SECOND, zone), (fire, wall)
    assert _is_fixed_time(expression), (fire, wall)
    assert next(CronSim(expression, _wall(fire - SECOND, zone))) < wall, (fire, wall)


def _occurrences(wall: datetime, zone: str) -> list[datetime]:
    """The UTC instants whose local wall time is ``wall``: none, one or two."""
    tz = ZoneInfo(zone)
    candidates = {wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)}
    return sorted(i for i in candidates if _wall(i, zone) == wall)


def _end_of_gap(wall: datetime, zone: str) -> datetime:
    """The first instant whose wall time is later than the missing ``wall``."""
    tz = ZoneInfo(zone)
    instant = min(wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
    while _wall(instant, zone) <= wall:
        instant += MINUTE
    while _wall(instant - SECOND, zone) > wall:
        instant -= SECOND
    return instant


def _oracle_fires_between(
    expression: str, zone: str, low: datetime, high: datetime
) -> list[datetime]:
    """Every fire in ``(low, high]`` per ADR 0002, from naive cronsim walls and zoneinfo."""
    offsets = (_offset(low, zone), _offset(high, zone))
    first_wall = low.replace(tzinfo=None) + min(offsets)  # no instant in range shows less
    last_wall = high.replace(tzinfo=None) + max(offsets)  # ... or more
    fixed = _is_fixed_time(expression)
    fires: set[datetime] = set()
    for wall in CronSim(expression, first_wall):
        if wall > last_wall:
            break
        occurrences = _occurrences(wall, zone)
        if not occurrences:
            candidates = [_end_of_gap(wall, zone)] if fixed else []
        else:
            candidates = occurrences[:1] if fixed else occurrences
        fires.update(i for i in candidates if low < i <= high)
    return sorted(fires)


def _check_thirty_fires(expression: str, zone: str, start: datetime) -> None:
    """Iterate ``next_after`` 30 times from ``start`` and check every fire and the run."""
    schedule = CronSchedule(expression, zone)
    fires: list[datetime] = []
    previous = start
    for _ in range(30):
        nxt = schedule.next_after(previous)
        assert nxt is not None
        assert nxt.tzinfo is UTC
        assert nxt.microsecond == 0
        assert nxt > previous
        _check_fire(expression, zone, nxt)
        if nxt - previous < ONE_TRANSITION_AT_MOST:
            # Nothing skipped in between: the oracle's only fire in (previous, nxt] is nxt.
            assert _oracle_fires_between(expression, zone, previous, nxt) == [nxt], previous
        fires.append(nxt)
        previous = nxt
    assert len(set(fires)) == len(fires)

    walls = Counter(_wall(fire, zone) for fire in fires)
    if _is_fixed_time(expression):
        # A fixed time of day fires at most once per local date and wall time.
        assert max(walls.values()) == 1, walls.most_common(3)
    else:
        # A rhythm repeats a wall time only across a fall back, once per offset.
        for wall, count in walls.items():
            assert count <= 2, wall
            if count == 2:
                twins = [f for f in fires if _wall(f, zone) == wall]
                assert _offset(twins[0], zone) > _offset(twins[1], zone), twins


@settings(max_examples=200, deadline=None)
@given(expression=_expressions, zone_and_start=_zone_and_start)
def test_cron_next_after_property_fires_match_expression(
    expression: str, zone_and_start: tuple[str, datetime]
) -> None:
    zone, start = zone_and_start
    _check_thirty_fires(expression, zone, start)


# Random draws seldom put a dense expression's 30 fires on a skipped or repeated wall
# time, so this twin draws only there: the transition hours, every day, starting shortly
# before the change or before the start of a repeated hour / half hour (30 fires of a
# per-second expression span only 30 seconds), or anywhere from 2 hours before to 1 after.
_transition_expressions = st.builds(
    lambda second, minute, hour: f"{second}{minute} {hour} * * *",
    st.one_of(st.just(""), _field(0, 59).map(lambda f: f"{f} ")),
    _field(0, 59),
    st.sampled_from(["*", "*/2", "*/3", "1", "2", "1-2", "2-3", "1,2", "0-4", "1,3"]),
)
_seconds_from_transition = st.one_of(
    st.builds(
        lambda base, lead: base - lead,
        st.sampled_from([0, -1800, -3600]),
        st.one_of(st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=3600)),
    ),
    st.integers(min_value=-2 * 3600, max_value=3600),
)
_zone_and_start_at_transition = st.sampled_from(DST_ZONES).flatmap(
    lambda zone: st.tuples(
        st.just(zone),
        st.builds(
            lambda t, s, us: t + timedelta(seconds=s, microseconds=us),
            st.sampled_from(_transitions(zone, 2026, 2027)),
            _seconds_from_transition,
            st.sampled_from([0, 1, 999_999]),
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(expression=_transition_expressions, zone_and_start=_zone_and_start_at_transition)
def test_cron_next_after_property_fires_match_expression_at_transitions(
    expression: str, zone_and_start: tuple[str, datetime]
) -> None:
    zone, start = zone_and_start
    _check_thirty_fires(expression, zone, start)
