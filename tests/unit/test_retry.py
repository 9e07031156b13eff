"""BackoffPolicy (core/retry.py): seed 003's 1 min, 2 min, 4 min, ... with cap and jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill.core.errors import ValidationError
from taskmill.core.retry import BackoffPolicy


def test_delay_default_doubles_from_one_minute() -> None:
    policy = BackoffPolicy()
    assert [policy.delay(n) for n in range(1, 6)] == [60.0, 120.0, 240.0, 480.0, 960.0]


def test_delay_default_reaches_one_hour_cap() -> None:
    policy = BackoffPolicy()
    assert policy.delay(6) == 1920.0
    assert policy.delay(7) == 3600.0  # 3840 capped
    assert policy.delay(20) == 3600.0


def test_delay_cap_respected() -> None:
    policy = BackoffPolicy(base_seconds=10, factor=2, cap_seconds=50)
    assert [policy.delay(n) for n in range(1, 6)] == [10.0, 20.0, 40.0, 50.0, 50.0]


def test_delay_factor_applied() -> None:
    policy = BackoffPolicy(base_seconds=1, factor=3, cap_seconds=1_000)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 27.0, 81.0]


def test_delay_factor_one_is_constant() -> None:
    policy = BackoffPolicy(base_seconds=5, factor=1, cap_seconds=5)
    assert {policy.delay(n) for n in range(1, 50)} == {5.0}


def test_delay_zero_base_is_zero() -> None:
    policy = BackoffPolicy(base_seconds=0, cap_seconds=0)
    assert policy.delay(1) == 0.0
    assert policy.delay(100) == 0.0


@pytest.mark.parametrize("attempt", [1, 2, 3, 7, 50])
def test_delay_jitter_stays_within_fraction(attempt: int) -> None:
    policy = BackoffPolicy(jitter=0.25)
    raw = BackoffPolicy().delay(attempt)
    rng = random.Random(1234)
    samples = [policy.delay(attempt, rng) for _ in range(500)]
    assert all(raw * 0.75 <= s <= raw * 1.25 for s in samples)
    # It really spreads: not every sample equals the raw delay, and both sides are reached.
    assert min(samples) < raw < max(samples)
    assert min(samples) < raw * 0.8
    assert max(samples) > raw * 1.2


def test_delay_jitter_reproducible_with_seeded_rng() -> None:
    policy = BackoffPolicy(jitter=0.5)
    first = [policy.delay(3, random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert first[0] != policy.delay(3, random.Random(8))


def test_delay_zero_jitter_ignores_rng() -> None:
    policy = BackoffPolicy(jitter=0.0)
    assert policy.delay(2, random.Random(1)) == 120.0
    assert policy.delay(2, random.Random(2)) == 120.0


def test_delay_full_jitter_never_negative() -> None:
    policy = BackoffPolicy(base_seconds=10, cap_seconds=10, jitter=1.0)
    rng = random.Random(99)
    samples = [policy.delay(1, rng) for _ in range(1_000)]
    assert all(0.0 <= s <= 20.0 for s in samples)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_seconds": -1}, "retry.base_seconds"),
        ({"factor": 0.5}, "retry.factor"),
        ({"factor": 0}, "retry.factor"),
        ({"cap_seconds": 30}, "retry.cap_seconds"),  # below the default base of 60
        ({"base_seconds": 10, "cap_seconds": 9.9}, "retry.cap_seconds"),
        ({"jitter": -0.01}, "retry.jitter"),
        ({"jitter": 1.01}, "retry.jitter"),
    ],
    ids=lambda v: str(v),
)
def test_backoff_policy_invalid_params_name_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        BackoffPolicy(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_seconds": 0, "cap_seconds": 0},
        {"factor": 1},
        {"base_seconds": 60, "cap_seconds": 60},
        {"jitter": 0},
        {"jitter": 1},
    ],
    ids=str,
)
def test_backoff_policy_boundary_params_accepted(kwargs: dict[str, float]) -> None:
    BackoffPolicy(**kwargs)


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_delay_attempt_below_one_raises(attempt: int) -> None:
    with pytest.raises(ValueError, match="1-based"):
        BackoffPolicy().delay(attempt)


@pytest.mark.parametrize("attempt", [65, 1_000, 10_000, 10**9])
def test_delay_huge_attempt_returns_cap(attempt: int) -> None:
    assert BackoffPolicy().delay(attempt) == 3600.0
    assert BackoffPolicy(factor=10, cap_seconds=86_400).delay(attempt) == 86_400.0


def test_delay_huge_attempt_with_jitter_within_cap_spread() -> None:
    policy = BackoffPolicy(jitter=0.1)
    value = policy.delay(10_000, random.Random(0))
    assert 3600.0 * 0.9 <= value <= 3600.0 * 1.1


_policies = st.builds(
    BackoffPolicy,
    base_seconds=st.floats(min_value=0, max_value=1_000),
    factor=st.floats(min_value=1, max_value=10),
    cap_seconds=st.just(10_000.0),
    jitter=st.floats(min_value=0, max_value=1),
)


@settings(max_examples=100, deadline=None)
@given(
    policy=_policies,
    attempt=st.integers(min_value=1, max_value=10_000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_delay_property_within_zero_and_jittered_cap(
    policy: BackoffPolicy, attempt: int, seed: int
) -> None:
    value = policy.delay(attempt, random.Random(seed))
    assert 0.0 <= value <= policy.cap_seconds * (1 + policy.jitter)


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(min_value=0, max_value=1_000),
    factor=st.floats(min_value=1, max_value=10),
    extra_cap=st.floats(min_value=0, max_value=100_000),
    attempt=st.integers(min_value=1, max_value=200),
)
def test_delay_property_non_decreasing_without_jitter(
    base: float, factor: float, extra_cap: float, attempt: int
) -> None:
    policy = BackoffPolicy(base_seconds=base, factor=factor, cap_seconds=base + extra_cap)
    current = policy.delay(attempt)
    following = policy.delay(attempt + 1)
    assert base <= current <= following <= policy.cap_seconds


def test_delay_small_factor_eventually_reaches_cap() -> None:
    policy = BackoffPolicy(base_seconds=1, factor=1.1, cap_seconds=3600)
    assert policy.delay(100) == 3600.0  # 1.1**99 ~ 12,527 s, so capped
    assert policy.delay(10_000) == 3600.0
