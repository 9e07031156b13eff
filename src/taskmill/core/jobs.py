"""Job records and the state machine.

Who moves a job out of each status (DESIGN.md §3)::

    scheduled  -> queued      the queue populator, once ``run_at`` is due and dependencies allow
               -> cancelled   a user (``cancel``), or the dependency checker when an upstream
                              job failed or was cancelled (policy ``cancel``)
    queued     -> running     a worker's claim (sets worker, attempt + 1, lease)
               -> cancelled   a user
    running    -> succeeded   the claiming worker (guarded on worker and attempt)
               -> failed      the claiming worker (attempts exhausted or not retryable),
                              or the failure watcher when the lease expired on the last attempt
               -> scheduled   the claiming worker (retry with backoff, or release on shutdown),
                              or the failure watcher when the lease expired (rescue)
               -> cancelled   a user; the worker sees it at its next heartbeat
    succeeded  (terminal)
    failed     -> scheduled   a user (``retry`` of a failed job)
    cancelled  (terminal)
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskmill.core.errors import InvalidTransition


class JobStatus(enum.StrEnum):
    """Where a job is in its life; see the module docstring for who moves it on."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SCHEDULED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.SCHEDULED, JobStatus.CANCELLED}
    ),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.SCHEDULED}),
    JobStatus.CANCELLED: frozenset(),
}

CANCELLABLE_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING})
UNFINISHED_STATUSES = CANCELLABLE_STATUSES


def can_transition(from_status: JobStatus, to_status: JobStatus) -> bool:
    """Whether the state machine allows ``from_status -> to_status``."""
    return to_status in ALLOWED_TRANSITIONS[from_status]


def check_transition(from_status: JobStatus, to_status: JobStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``from_status -> to_status`` is allowed."""
    if not can_transition(from_status, to_status):
        raise InvalidTransition(from_status.value, to_status.value)


class ScheduleType(enum.StrEnum):
    """How a job or template was scheduled: at once, at a time, every N seconds, on a cron."""

    IMMEDIATE = "immediate"
    ONE_TIME = "one_time"
    INTERVAL = "interval"
    CRON = "cron"


class DependencyFailurePolicy(enum.StrEnum):
    """What a job does when an upstream job it depends on ends ``failed`` or ``cancelled``.

    ``cancel`` (default): the job is cancelled at once, and so are its own waiting
    dependents with the same policy. ``run``: it runs anyway, once every upstream job
    has finished (succeeded, failed or cancelled).
    """

    CANCEL = "cancel"
    RUN = "run"


class RunOutcome(enum.StrEnum):
    """How one attempt (a ``job_runs`` row) ended; ``None`` while it runs."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"
    RELEASED = "released"


DEFAULT_MERCHANT_ID = "00000000-0000-0000-0000-000000000000"
"""The tenant the embedded library uses; created by the first migration."""


@dataclass(frozen=True, slots=True)
class Job:
    """One job instance: the ``jobs`` row (the projection of its events)."""

    id: str
    merchant_id: str
    task_type: str
    queue: str
    priority: int
    payload: Any
    status: JobStatus
    schedule_type: ScheduleType
    run_at: datetime
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime
    template_id: str | None = None
    scheduled_for: datetime | None = None
    idempotency_key: str | None = None
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = None
    last_error: str | None = None
    cancel_reason: str | None = None
    trace_context: str | None = None
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.CANCEL


@dataclass(frozen=True, slots=True)
class JobRun:
    """One attempt of a job (seed 002's TaskRun)."""

    job_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: RunOutcome | None
    error: str | None
    duration_seconds: float | None


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs to list; keyset-paginated by ``(created_at, id)``, oldest first unless
    ``newest_first`` (``after`` then continues towards older jobs)."""

    statuses: Sequence[JobStatus] = ()
    task_type: str | None = None
    template_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    run_after: datetime | None = None
    run_before: datetime | None = None
    limit: int = 100
    after: tuple[datetime, str] | None = None
    newest_first: bool = False
