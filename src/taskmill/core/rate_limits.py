"""Rate limits on task types: ``"10/s"``, ``"600/m"``, ``"100/h"``, with a burst.

A limit is a token bucket (ADR 0014): ``per_second`` tokens flow in, the bucket holds at
most ``burst``, and each job start takes one. Over any window of ``w`` seconds at most
``per_second * w + burst`` jobs of the type start, whichever executors start them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taskmill.core.errors import ValidationError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_FORM = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")

MAX_COUNT = 1_000_000
"""The largest count in ``"<count>/<unit>"``."""
MAX_PER_SECOND = 10_000.0
"""The fastest limit: beyond it, a limit costs more claims than it saves."""
MAX_BURST = 10_000
"""The largest burst (jobs that may start at once after an idle spell)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``per_second`` job starts a second on average, at most ``burst`` at once."""

    per_second: float
    burst: int = 1
    text: str = ""

    def seconds_per_token(self) -> float:
        return 1.0 / self.per_second


def parse_rate_limit(text: str, burst: int | None = None) -> RateLimit:
    """``"<count>/<s|m|h>"`` and an optional ``burst`` (default 1: starts spaced evenly,
    as Celery's ``rate_limit``), or ``ValidationError`` naming ``rate_limit`` or
    ``rate_burst``."""
    if not isinstance(text, str):
        raise ValidationError("rate_limit", 'must be a string such as "10/s", "30/m" or "100/h"')
    match = _FORM.match(text)
    if match is None:
        raise ValidationError(
            "rate_limit", f'{text[:50]!r} is not "<count>/<s|m|h>", such as "10/s" or "100/h"'
        )
    count, unit = int(match.group(1)), match.group(2)
    if not 1 <= count <= MAX_COUNT:
        raise ValidationError("rate_limit", f"the count must be between 1 and {MAX_COUNT:,}")
    per_second = count / _UNITS[unit]
    if per_second > MAX_PER_SECOND:
        raise ValidationError("rate_limit", f"must be at most {MAX_PER_SECOND:,.0f} a second")
    if burst is None:
        burst = 1
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
        raise ValidationError("rate_burst", f"must be an integer between 1 and {MAX_BURST:,}")
    return RateLimit(per_second=per_second, burst=burst, text=f"{count}/{unit}")
