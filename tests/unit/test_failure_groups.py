"""Grouping failed jobs by error, and a job's wait before it started (pure functions)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.core.failures import NO_ERROR, FailedJob, error_key, group_failures
from taskmill.core.jobs import Job, JobStatus, ScheduleType, waited_seconds

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "key"),
    [
        ("TimeoutError: timeout after 31s", "TimeoutError: timeout after <n>s"),
        ("timeout after 32.5s\nTraceback (most recent call last):", "timeout after <n>s"),
        ("\n\n  job 3f2a1c9e-1111-2222-3333-444455556666 gone  ", "job <id> gone"),
        ("HTTP 503 from 10.0.0.1:8080", "HTTP <n> from <n>"),
        ("object deadbeefcafe1234 missing at 0x7f3a", "object <id> missing at <n>"),
        ("card declined", "card declined"),
        (None, NO_ERROR),
        ("   \n ", NO_ERROR),
    ],
)
def test_error_key_masks_numbers_and_ids(error: str | None, key: str) -> None:
    assert error_key(error) == key


def test_group_failures_largest_first_with_ids_bounded() -> None:
    failed = [
        FailedJob("a", "pay", "timeout after 31s", T0),
        FailedJob("b", "mail", "card declined", T0 - timedelta(seconds=1)),
        FailedJob("c", "mail", "timeout after 32s", T0 - timedelta(seconds=2)),
        FailedJob("d", "pay", "timeout after 9s\nmore", T0 - timedelta(seconds=3)),
    ]
    timeouts, cards = group_failures(failed, max_ids=2)
    assert (timeouts.key, timeouts.count, timeouts.task_types) == (
        "timeout after <n>s",
        3,
        ["mail", "pay"],
    )
    assert (timeouts.newest_at, timeouts.example, timeouts.job_ids) == (
        T0,
        "timeout after 31s",
        ["a", "c"],
    )
    assert (cards.count, cards.job_ids) == (1, ["b"])


def _job(**changes: object) -> Job:
    base = Job(
        id="j",
        merchant_id="m",
        task_type="t",
        queue="default",
        priority=0,
        payload=None,
        status=JobStatus.SUCCEEDED,
        schedule_type=ScheduleType.IMMEDIATE,
        run_at=T0,
        attempt=1,
        max_attempts=1,
        timeout_seconds=None,
        created_at=T0,
        started_at=T0 + timedelta(seconds=4),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_waited_seconds() -> None:
    assert waited_seconds(_job()) == 4.0
    assert _job().waited_seconds == 4.0
    # Created after its run_at (a time in the past): due from its creation.
    assert waited_seconds(_job(run_at=T0 - timedelta(hours=1))) == 4.0
    assert waited_seconds(_job(started_at=None, status=JobStatus.QUEUED)) is None
    # A retry waits: the last start was before the new due time.
    retry_at = T0 + timedelta(minutes=1)
    assert waited_seconds(_job(status=JobStatus.SCHEDULED, run_at=retry_at)) is None
    assert waited_seconds(_job(status=JobStatus.CANCELLED, run_at=retry_at)) is None
    # Clock skew between producer and database is no negative wait.
    skewed = _job(status=JobStatus.RUNNING, started_at=T0 - timedelta(milliseconds=3))
    assert waited_seconds(skewed) == 0.0
