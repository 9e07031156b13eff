"""Exponential backoff between attempts (seed 003: 1 min, 2 min, 4 min, ...)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from taskmill.core.errors import ValidationError


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """``delay(n) = min(cap, base * factor**(n-1))``, then spread by ``± jitter`` (a fraction)."""

    base_seconds: float = 60.0
    factor: float = 2.0
    cap_seconds: float = 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base_seconds < 0:
            raise ValidationError("retry.base_seconds", "must be >= 0")
        if self.factor < 1:
            raise ValidationError("retry.factor", "must be >= 1")
        if self.cap_seconds < self.base_seconds:
            raise ValidationError("retry.cap_seconds", "must be >= retry.base_seconds")
        if not 0 <= self.jitter <= 1:
            raise ValidationError("retry.jitter", "must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            raw = min(self.cap_seconds, self.base_seconds * float(self.factor) ** (attempt - 1))
        except OverflowError:  # float power: past any float long ago, so the cap
            raw = self.cap_seconds
        if self.jitter == 0:
            return raw
        spread = raw * self.jitter
        return max(0.0, raw + (rng or random).uniform(-spread, spread))
