"""The per-merchant token bucket behind ``api.requests_per_second_per_merchant`` (S26)."""

from __future__ import annotations

import pytest

from taskmill.api.quota import MerchantQuota


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_api_quota_burst_then_rate_per_merchant() -> None:
    """S26: a burst, then exactly ``rate`` a second; one merchant never drains another."""
    ticks = Ticks()
    quota = MerchantQuota(rate=5.0, burst=10, monotonic=ticks)
    assert [quota.take("a") for _ in range(10)] == [None] * 10
    assert quota.take("a") == 1  # empty: wait a second (rounded up)
    assert quota.take("b") is None  # b has its own bucket
    ticks.now += 1.0
    allowed = sum(quota.take("a") is None for _ in range(100))
    assert allowed == 5
    ticks.now += 3600
    assert sum(quota.take("a") is None for _ in range(100)) == 10  # capped at the burst


def test_api_quota_retry_after_rounds_up_slow_rates() -> None:
    ticks = Ticks()
    quota = MerchantQuota(rate=0.1, burst=1, monotonic=ticks)
    assert quota.take("a") is None
    assert quota.take("a") == 10
    ticks.now += 9.5
    assert quota.take("a") == 1
    ticks.now += 0.5
    assert quota.take("a") is None


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_api_quota_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        MerchantQuota(rate, burst)
