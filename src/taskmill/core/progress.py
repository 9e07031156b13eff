"""A running job's progress, as its handler reports it (``ctx.progress``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.errors import ValidationError
from taskmill.core.text import check_text

MAX_PROGRESS_MESSAGE = 200


@dataclass(frozen=True, slots=True)
class Progress:
    """The latest progress the job's current attempt reported."""

    fraction: float
    """0.0 to 1.0."""
    message: str | None
    attempt: int
    reported_at: datetime


def check_progress(fraction: float, message: str | None) -> tuple[float, str | None]:
    """``(fraction, message)`` if a handler may report them, else a ``ValidationError``."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValidationError("progress", "must be a number from 0 to 1")
    if math.isnan(fraction) or not 0 <= fraction <= 1:
        raise ValidationError("progress", f"must be from 0 to 1, not {fraction!r}")
    if message is not None:
        if not isinstance(message, str) or len(message) > MAX_PROGRESS_MESSAGE:
            raise ValidationError(
                "message", f"must be a string of at most {MAX_PROGRESS_MESSAGE} characters"
            )
        check_text("message", message)
    return float(fraction), message
