"""Retention's pure parts: ages from the command line, the settings' bounds, cutoffs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskmill.config import load_settings
from taskmill.core.errors import ConfigError, ValidationError
from taskmill.core.jobs import JobStatus
from taskmill.core.retention import Retention, parse_age

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("1m", timedelta(minutes=1)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        (" 3650d ", timedelta(days=3650)),
    ],
)
def test_parse_age_reads_minutes_hours_days(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize(
    "text", ["", "7", "d", "7w", "-7d", "1.5d", "7 d", "0m", "3651d", "9999999d"]
)
def test_parse_age_refuses_naming_the_option(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_age(text)
    assert refused.value.field == "--older-than"


def test_retention_settings_defaults_and_cutoffs() -> None:
    retention = load_settings().retention.retention()
    assert retention == Retention(
        timedelta(days=7), timedelta(days=30), timedelta(days=30), timedelta(days=30)
    )
    cutoffs = retention.cutoffs(NOW)
    assert cutoffs.finished_before == (
        (JobStatus.SUCCEEDED, NOW - timedelta(days=7)),
        (JobStatus.FAILED, NOW - timedelta(days=30)),
        (JobStatus.CANCELLED, NOW - timedelta(days=30)),
    )
    assert cutoffs.templates_deleted_before == NOW - timedelta(days=30)


def test_retention_settings_zero_keeps_forever() -> None:
    retention = load_settings(retention={"failed_after_days": 0}).retention.retention()
    assert retention.failed is None
    statuses = [status for status, _ in retention.cutoffs(NOW).finished_before]
    assert statuses == [JobStatus.SUCCEEDED, JobStatus.CANCELLED]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("succeeded_after_days", 0.0006),  # under a minute
        ("succeeded_after_days", "30s"),  # seconds are not an age unit
        ("failed_after_days", "0m"),
        ("failed_after_days", "3651d"),
        ("cancelled_after_days", "ten days"),
        ("failed_after_days", 3651),
        ("cancelled_after_days", -1),
        ("deleted_templates_after_days", 0.0001),
        ("batch_size", 0),
        ("batch_size", 1001),
        ("interval_seconds", 0.5),
        ("interval_seconds", 86_401),
        ("pause_seconds", -0.1),
        ("pause_seconds", 61),
    ],
)
def test_retention_settings_bounds_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"retention.{key}"):
        load_settings(retention={key: value})


def test_retention_settings_bounds_accept_their_ends() -> None:
    settings = load_settings(
        retention={
            "succeeded_after_days": 1 / 24,
            "failed_after_days": 3650,
            "batch_size": 1,
            "interval_seconds": 86_400,
            "pause_seconds": 0,
        }
    )
    assert settings.retention.retention().succeeded == timedelta(hours=1)


def test_retention_ages_read_minutes_hours_and_days_as_text() -> None:
    settings = load_settings(
        retention={
            "succeeded_after_days": "10m",
            "failed_after_days": "12h",
            "cancelled_after_days": "1m",
            "deleted_templates_after_days": "3650d",
        }
    )
    retention = settings.retention.retention()
    assert retention.succeeded == timedelta(minutes=10)
    assert retention.failed == timedelta(hours=12)
    assert retention.cancelled == timedelta(minutes=1)
    assert retention.deleted_templates == timedelta(days=3650)


def test_retention_age_from_the_environment_may_be_text_or_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKMILL_RETENTION__SUCCEEDED_AFTER_DAYS", "5m")
    monkeypatch.setenv("TASKMILL_RETENTION__FAILED_AFTER_DAYS", "2.5")
    retention = load_settings().retention.retention()
    assert retention.succeeded == timedelta(minutes=5)
    assert retention.failed == timedelta(days=2.5)
