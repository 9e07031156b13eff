"""Schedules: when a job or template fires. All arithmetic is in UTC.

One interface, :class:`Schedule`, for seed 003's four kinds. Cron expressions are
matched by ``cronsim``; taskmill owns the DST rule (DESIGN.md §7a, docs/adr/0002):

* an expression whose hour field is a wildcard or a step (``*``, ``*/2``) keeps its
  rhythm: it fires in both copies of a repeated hour and skips the missing one;
* otherwise each matching local time is a fixed time of day: when it occurs twice it
  fires once (the first occurrence), when it does not exist it fires once at the first
  valid instant after the gap (02:30 -> 03:00 in Europe/Berlin on 2026-03-29).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
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
# No zone in the tz database has moved its clocks by more than 2 hours at once.
_MAX_DST_SHIFT = timedelta(hours=3)


class Schedule(Protocol):
    """When something fires."""

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (aware, UTC), or ``None`` if done."""
        ...


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
    """Fires at ``start_at + k * seconds`` for k = 0, 1, ... up to ``end_at``."""

    seconds: float
    start_at: datetime
    end_at: datetime | None = None

    def __post_init__(self) -> None:
        if not 0 < self.seconds < float("inf"):
            raise ValidationError("interval_seconds", "must be a finite number greater than 0")
        if self.end_at is not None and self.end_at < self.start_at:
            raise ValidationError("end_at", "must not be before start_at")

    def next_after(self, after: datetime) -> datetime | None:
        if after < self.start_at:
            nxt = self.start_at
        else:
            step = timedelta(seconds=self.seconds)
            nxt = self.start_at + step * (int((after - self.start_at) / step) + 1)
        if self.end_at is not None and nxt > self.end_at:
            return None
        return nxt


def load_timezone(name: str, field_name: str = "timezone") -> tzinfo:
    """The IANA zone ``name``, or a :class:`ValidationError` naming ``field_name``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(field_name, f"unknown time zone {name!r}") from exc


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


def _check_fields(expr: str) -> None:
    """Name the first invalid field, since cronsim's messages do not say which one."""
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
        parts = expr.split()
        hour = parts[2] if len(parts) == 6 else parts[1]
        object.__setattr__(self, "_expr", expr)
        object.__setattr__(self, "_tz", load_timezone(self.timezone))
        object.__setattr__(self, "_keeps_rhythm", "*" in hour or "/" in hour)

    def next_after(self, after: datetime) -> datetime | None:
        after = utc(after)
        best = self._first_from(_wall(after, self._tz), after)
        if self._keeps_rhythm:
            # Inside the first pass of a repeated hour, the second pass (earlier wall
            # times, later instants) may fire before anything found by walking forward.
            fall_back = _fall_back_within(self._tz, after, _MAX_DST_SHIFT)
            if fall_back is not None:
                second_pass = self._first_from(_wall(fall_back, self._tz) - _ONE_SECOND, after)
                best = min(best, second_pass)
        return best

    def _first_from(self, start_wall: datetime, after: datetime) -> datetime:
        """The earliest instant > ``after`` among walls matching after ``start_wall``."""
        for wall in CronSim(self._expr, start_wall):
            later = [instant for instant in self._instants(wall) if instant > after]
            if later:
                return min(later)
        raise AssertionError("cronsim stops only by raising")  # pragma: no cover

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
