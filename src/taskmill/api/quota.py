"""A per-merchant request rate limit (RELIABILITY.md S26: one noisy tenant must not
starve the others).

A token bucket per merchant: ``burst`` tokens, refilled at ``rate`` per second; every
authenticated request takes one, and a merchant with none left gets 429 with
``Retry-After``. The buckets live in this API process's memory, so N API replicas behind
a load balancer give a merchant up to N times the quota (docs/api/README.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class MerchantQuota:
    """Token buckets keyed by merchant id; ``rate`` tokens per second up to ``burst``."""

    def __init__(
        self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the rate must be > 0 and the burst >= 1")
        self.rate = rate
        self.burst = burst
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def take(self, merchant_id: str) -> int | None:
        """Take one token: ``None`` if the request may go on, else seconds to wait."""
        now = self._monotonic()
        bucket = self._buckets.get(merchant_id)
        if bucket is None:
            bucket = self._buckets[merchant_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
