"""Schedules: when a job or template fires. All arithmetic is in UTC.

One interface, :class:`Schedule`, for seed 003's four kinds. Cron expressions are
matched by ``cronsim``; taskmill owns the DST rule (DESIGN.md §7a, docs/adr/0002):

* an expression is a *fixed time of day* when its seconds, minutes and hours fields all
  have no ``*``, ``/`` or range (a 5-field expression's seconds are ``0``): when such a
  local time occurs twice it fires once (the first occurrence), when it does not exist
  it fires once at the first valid instant after the gap (02:30 -> 03:00 in
  Europe/Berlin on 2026-03-29);
* any other expression keeps its rhythm: it fires in both passes of a repeated hour and
  skips the missing instants.

Every schedule is bounded: times from :data:`MAX_SCHEDULE_TIME` on are refused, and a
cron expression must fire within :data:`CRON_HORIZON_YEARS` (``0 0 30 2 *`` never does).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from taskmill.core.errors import ValidationError

CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_CRON_FIELDS_5 = ("minute", "hour", "day", "month", "weekday")
_CRON_FIELDS_6 = ("second", *_CRON_FIELDS_5)
_ZERO = timedelta(0)
_ONE_SECOND = timedelta(seconds=1)
_ONE_MICROSECOND = timedelta(microseconds=1)
# No zone in the tz database has moved its clocks by more than 2 hours at once.
_MAX_DST_SHIFT = timedelta(hours=3)
# Start, end and fire times stay below this, far from datetime's year-9999 ceiling, so
# that no arithmetic on them (offsets, a step, a look-ahead) can overflow.
MAX_SCHEDULE_TIME = datetime(9000, 1, 1, tzinfo=UTC)
# An interval is at least one microsecond (timedelta's resolution) and at most 10 years.
MAX_INTERVAL_SECONDS = 10 * 366 * 86400.0
# A cron expression that does not fire within this many years never will (the calendar's
# day-of-week pattern repeats within 40 years), so it is refused, and a walk stops there.
CRON_HORIZON_YEARS = 50
_REFERENCE = datetime(2026, 1, 1, tzinfo=UTC)


class Schedule(Protocol):
    """When something fires."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (aware, UTC), or ``None`` if done."""
        ...


def check_schedule_time(when: datetime, field_name: str) -> datetime:
    """``when`` in UTC, or a :class:`ValidationError` if it is at or after year 9000."""
    when = utc(when)
    if when >= MAX_SCHEDULE_TIME:
        raise ValidationError(field_name, "must be before 9000-01-01T00:00:00Z")
    return when


def utc(when: datetime) -> datetime:
    """``when`` as an aware UTC datetime; naive input is rejected, never guessed."""
    if when.tzinfo is None:
        raise ValidationError("datetime", f"{when.isoformat()} has no time zone")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValidationError(
            "datetime", f"{when.isoformat()} is outside the range of representable times"
        ) from None


@dataclass(frozen=True, slots=True)
class OneTimeSchedule:
    """Fires once at ``run_at``."""

    run_at: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.run_at if self.run_at > after else None


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Fires at ``start_at + k * seconds`` for k = 0, 1, ... up to ``end_at``
    (and before :data:`MAX_SCHEDULE_TIME`)."""

    seconds: float
    start_at: datetime
    end_at: datetime | None = None
    _step: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and 0 < self.seconds <= MAX_INTERVAL_SECONDS):
            raise ValidationError(
                "interval_seconds",
                f"must be a finite number greater than 0 and at most {MAX_INTERVAL_SECONDS:.0f}",
            )
        step = timedelta(seconds=self.seconds)
        if step <= _ZERO:  # 1e-9 s rounds to no time at all
            raise ValidationError("interval_seconds", "must be at least 0.000001 (1 µs)")
        object.__setattr__(self, "_step", step)
        check_schedule_time(self.start_at, "start_at")
        if self.end_at is not None:
            check_schedule_time(self.end_at, "end_at")
            if self.end_at < self.start_at:
                raise ValidationError("end_at", "must not be before start_at")

    def next_after(self, after: datetime) -> datetime | None:
        if after < self.start_at:
            nxt = self.start_at
        else:
            k = (after - self.start_at) // self._step + 1  # exact: integer microseconds
            if k > self._last_k():
                return None
            nxt = self.start_at + self._step * k
        if self.end_at is not None and nxt > self.end_at:
            return None
        return nxt

    def _last_k(self) -> int:
        """The index of the last tick before :data:`MAX_SCHEDULE_TIME`."""
        return (MAX_SCHEDULE_TIME - _ONE_MICROSECOND - self.start_at) // self._step

    def count_between(self, low: datetime, high: datetime) -> int:
        """How many ticks fall in ``[low, high)``, by arithmetic (no walk)."""
        last = self._last_k()
        if self.end_at is not None:
            last = min(last, (self.end_at - self.start_at) // self._step)
        first_k = max(0, -((self.start_at - low) // self._step))  # ceil((low - start) / step)
        end_k = min(last + 1, -((self.start_at - high) // self._step))
        return max(0, end_k - first_k)


def load_timezone(name: str, field_name: str = "timezone") -> tzinfo:
    """The IANA zone ``name``, or a :class:`ValidationError` naming ``field_name``."""
    try:
        return ZoneInfo(name)
    # OSError: a tzdata directory (``Europe``: IsADirectoryError) or an over-long name.
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(field_name, f"unknown time zone {name[:64]!r}") from exc


def normalize_cron(expression: str) -> str:
    """Expand aliases and check the field count; the result has 5 or 6 fields."""
    expr = " ".join(expression.split())
    expr = CRON_ALIASES.get(expr.lower(), expr)
    if len(expr.split()) not in (5, 6):
        raise ValidationError(
            "cron",
            f"{expression!r} has {len(expr.split())} fields; expected 5 "
            "(minute hour day month weekday) or 6 (second first)",
        )
    return expr


@lru_cache(maxsize=1024)
def _check_fields(expr: str) -> None:
    """Name the first invalid field, since cronsim's messages do not say which one.

    Cached (an invalid expression raises, and is not): the recurrence manager rebuilds
    every due template's schedule each round, and parsing it eight times cost 0.2 ms."""
    parts = expr.split()
    names = _CRON_FIELDS_6 if len(parts) == 6 else _CRON_FIELDS_5
    filler = ["0", "0", "1", "1", "*"]
    for i, name in enumerate(names):
        probe = filler.copy() if len(parts) == 5 else ["0", *filler]
        probe[i] = parts[i]
        try:
            CronSim(" ".join(probe), datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValidationError("cron", f"invalid {name} field {parts[i]!r}: {exc}") from exc
    try:
        CronSim(expr, datetime(2026, 1, 1))
    except CronSimError as exc:
        raise ValidationError("cron", f"{expr!r}: {exc}") from exc


def is_fixed_time(expression: str) -> bool:
    """Whether a normalized expression names fixed times of day (ADR 0002): its seconds,
    minutes and hours fields hold no ``*``, ``/`` or range (``0,30`` is fixed)."""
    parts = expression.split()
    clock_fields = parts[:3] if len(parts) == 6 else ["0", *parts[:2]]
    return not any(mark in f for f in clock_fields for mark in "*/-")


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A 5- or 6-field cron expression evaluated in an IANA time zone."""

    expression: str
    timezone: str = "UTC"
    _expr: str = field(init=False, repr=False, compare=False)
    _tz: tzinfo = field(init=False, repr=False, compare=False)
    _keeps_rhythm: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expr = normalize_cron(self.expression)
        _check_fields(expr)
        object.__setattr__(self, "_expr", expr)
        object.__setattr__(self, "_tz", load_timezone(self.timezone))
        object.__setattr__(self, "_keeps_rhythm", not is_fixed_time(expr))
        if not _fires_at_all(expr, self.timezone):
            raise ValidationError(
                "cron", f"{expr!r} never fires (no match within {CRON_HORIZON_YEARS} years)"
            )

    def next_after(self, after: datetime) -> datetime | None:
        """The next fire, or ``None`` if none comes within the horizon or before 9000."""
        after = utc(after)
        if after >= MAX_SCHEDULE_TIME:
            return None
        best = self._first_from(_wall(after, self._tz), after)
        if self._keeps_rhythm:
            # Inside the first pass of a repeated hour, the second pass (earlier wall
            # times, later instants) may fire before anything found by walking forward.
            fall_back = _fall_back_within(self._tz, after, _MAX_DST_SHIFT)
            if fall_back is not None:
                second_pass = self._first_from(_wall(fall_back, self._tz) - _ONE_SECOND, after)
                if second_pass is not None:
                    best = second_pass if best is None else min(best, second_pass)
        return best if best is None or best < MAX_SCHEDULE_TIME else None

    def count_between(self, low: datetime, high: datetime) -> int:
        """About how many ticks fall in ``[low, high)``, counted per local day without a
        walk; exact except that a clock change's skipped or repeated ticks are not."""
        if high <= low:
            return 0
        low_wall, high_wall = (
            _wall(min(low, MAX_SCHEDULE_TIME), self._tz),
            _wall(min(high, MAX_SCHEDULE_TIME), self._tz),
        )
        return _count_walls(self._expr, low_wall, high_wall)

    def _first_from(self, start_wall: datetime, after: datetime) -> datetime | None:
        """The earliest instant > ``after`` among walls matching after ``start_wall``."""
        horizon = start_wall.year + CRON_HORIZON_YEARS
        walls = CronSim(self._expr, start_wall)
        while True:
            try:
                wall = next(walls)
            except (StopIteration, OverflowError):  # no match for 50 years, or year 9999
                return None
            if wall.year > horizon:
                return None
            later = [instant for instant in self._instants(wall) if instant > after]
            if later:
                return min(later)
            if self._keeps_rhythm and self._missing(wall):
                # Jump over the gap at once: a per-second rhythm would walk it second by
                # second, and for ever if it only ever names missing times.
                walls = CronSim(self._expr, self._gap_end_wall(wall) - _ONE_SECOND)

    def _missing(self, wall: datetime) -> bool:
        return _wall(wall.replace(tzinfo=self._tz).astimezone(UTC), self._tz) != wall and (
            _wall(wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC), self._tz) != wall
        )

    def _gap_end_wall(self, wall: datetime) -> datetime:
        first = wall.replace(tzinfo=self._tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC)
        return _wall(_transition_between(self._tz, second, first), self._tz)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which local wall time ``wall`` fires, per the DST rule."""
        first = wall.replace(tzinfo=self._tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self._tz, fold=1).astimezone(UTC)
        exists = _wall(first, self._tz) == wall or _wall(second, self._tz) == wall
        if not exists:
            return [] if self._keeps_rhythm else [_transition_between(self._tz, second, first)]
        if first != second:  # the wall time occurs twice (fall back)
            return [first, second] if self._keeps_rhythm else [min(first, second)]
        return [first]


@lru_cache(maxsize=256)
def _fires_at_all(expr: str, timezone: str) -> bool:
    """Whether ``expr`` fires within the horizon after a fixed reference instant."""
    schedule = object.__new__(CronSchedule)
    object.__setattr__(schedule, "_expr", expr)
    object.__setattr__(schedule, "_tz", load_timezone(timezone))
    object.__setattr__(schedule, "_keeps_rhythm", not is_fixed_time(expr))
    return schedule.next_after(_REFERENCE) is not None


@lru_cache(maxsize=64)
def _times_of_day(expr: str) -> tuple[list[int], CronSim]:
    """The matching seconds of a day, sorted, and a parsed ``CronSim`` for its day test."""
    sim = CronSim(expr, datetime(2026, 1, 1))
    seconds = sorted(
        h * 3600 + m * 60 + s for h in sim.hours for m in sim.minutes for s in sim.seconds
    )
    return seconds, sim


def _count_walls(expr: str, low: datetime, high: datetime) -> int:
    """Matching naive wall times in ``[low, high)``: per day, matching day x time of day."""
    seconds, sim = _times_of_day(expr)
    total = 0
    for offset in range((high.date() - low.date()).days + 1):
        day = low.date() + timedelta(days=offset)
        if day.month in sim.months and sim.match_day(day):
            lo = _second_of_day(low) if day == low.date() else 0
            hi = _second_of_day(high) if day == high.date() else 86400
            total += max(0, bisect_left(seconds, hi) - bisect_left(seconds, lo))
    return total


def _second_of_day(wall: datetime) -> int:
    """The first whole second at or after ``wall`` within its day."""
    return wall.hour * 3600 + wall.minute * 60 + wall.second + (1 if wall.microsecond else 0)


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _fall_back_within(tz: tzinfo, after: datetime, span: timedelta) -> datetime | None:
    """The instant the clock falls back in ``(after, after + span]``, if it does."""
    end = after + span
    if (end.astimezone(tz).utcoffset() or _ZERO) >= (after.astimezone(tz).utcoffset() or _ZERO):
        return None
    return _transition_between(tz, after, end)


def _transition_between(tz: tzinfo, low: datetime, high: datetime) -> datetime:
    """The first instant with the new UTC offset, between ``low`` and ``high`` (UTC)."""
    low, high = min(low, high), max(low, high)
    low_offset = low.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(tz).utcoffset() == low_offset:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)
