"""Rows to core records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row

from taskmill.core.jobs import (
    DependencyFailurePolicy,
    Job,
    JobRun,
    JobStatus,
    RunOutcome,
    ScheduleType,
)


def to_job(row: Row[Any]) -> Job:
    return to_job_dict(row._mapping)


def to_job_dict(m: Mapping[Any, Any]) -> Job:
    """A :class:`Job` from a ``jobs`` row as a mapping (a fetched row or an inserted dict)."""
    return Job(
        id=m["id"],
        merchant_id=m["merchant_id"],
        task_type=m["task_type"],
        queue=m["queue"],
        priority=m["priority"],
        payload=m["payload"],
        status=JobStatus(m["status"]),
        schedule_type=ScheduleType(m["schedule_type"]),
        run_at=m["run_at"],
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        timeout_seconds=m["timeout_seconds"],
        created_at=m["created_at"],
        template_id=m["template_id"],
        scheduled_for=m["scheduled_for"],
        idempotency_key=m["idempotency_key"],
        worker_id=m["worker_id"],
        lease_expires_at=m["lease_expires_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        result=m["result"],
        last_error=m["last_error"],
        cancel_reason=m["cancel_reason"],
        trace_context=m["trace_context"],
        on_dependency_failure=DependencyFailurePolicy(m["on_dependency_failure"]),
        unique_key=m["unique_key"],
    )


def to_run(row: Row[Any]) -> JobRun:
    m = row._mapping
    return JobRun(
        job_id=m["job_id"],
        attempt=m["attempt"],
        worker_id=m["worker_id"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        outcome=RunOutcome(m["outcome"]) if m["outcome"] else None,
        error=m["error"],
        duration_seconds=m["duration_seconds"],
    )
