"""Job records and the state machine.

Who moves a job out of each status (DESIGN.md §3)::

    scheduled  -> queued      the queue populator, once ``run_at`` is due and dependencies allow;
                              or a user (``run now``) before ``run_at``, if dependencies allow
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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskmill.core.errors import InvalidTransition, ValidationError


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
    unique_key: str | None = None

    @property
    def waited_seconds(self) -> float | None:
        """See :func:`waited_seconds`."""
        return waited_seconds(self)


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


WAITING_FOR_ATTEMPT = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


def waited_seconds(job: Job) -> float | None:
    """How long the job's latest attempt waited to start: from when it became due (its
    ``run_at``, or its creation if ``run_at`` was earlier) to its ``started_at``.

    ``None`` until an attempt started, and while the next one waits (a retry or a rescue
    moved ``run_at`` past the last start); a job cancelled before its retry started keeps
    ``None``. ``run_at`` is written on the producer's clock and ``started_at`` on the
    database's: a skew between them is read as no wait, never a negative one.
    """
    if job.started_at is None or job.status in WAITING_FOR_ATTEMPT:
        return None
    due = max(job.run_at, job.created_at)
    if job.started_at < due and job.status is JobStatus.CANCELLED:
        return None
    return max(0.0, (job.started_at - due).total_seconds())


SEARCH_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs to list; keyset-paginated by ``(created_at, id)``, oldest first or,
    with ``newest_first``, newest first (``after`` is then the cursor's lower bound).

    ``search``: a job id (whole), or text found (case-insensitively) in the task type or
    in the payload's JSON text.
    """

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
    search: str | None = None


# A unique key holds while its job is in one of these (the partial unique index of
# migration 0012); a finished job's key is free again.
UNIQUE_WHILE = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING})
UNIQUE_KEY_MAX_LENGTH = 200
# Letters, digits and ``. _ : @ / + = # -``: keys are built from ids and names
# ("invoice-42", "user:7/welcome"); spaces and control characters are typos.
_UNIQUE_KEY = re.compile(r"[A-Za-z0-9._:@/+=#-]+")


def check_unique_key(key: str | None, name: str = "unique_key") -> str | None:
    """``key`` if it is a valid unique key (or ``None``), else :class:`ValidationError`."""
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= UNIQUE_KEY_MAX_LENGTH:
        raise ValidationError(name, f"must be 1-{UNIQUE_KEY_MAX_LENGTH} characters")
    if _UNIQUE_KEY.fullmatch(key) is None:
        raise ValidationError(name, "may hold only letters, digits and . _ : @ / + = # -")
    return key


# Bounds of what a job is scheduled with, at every door (the API's schemas, the library,
# a task's registration): the same numbers everywhere.
MAX_PRIORITY = 1000
MAX_RETRIES = 100
MAX_TIMEOUT_SECONDS = 7 * 86400.0


def check_job_options(
    *, max_retries: int | None = None, timeout: float | None = None, priority: int | None = None
) -> None:
    """Refuse a retry count, timeout (seconds) or priority out of bounds, naming it."""
    if max_retries is not None and not 0 <= max_retries <= MAX_RETRIES:
        raise ValidationError("max_retries", f"must be between 0 and {MAX_RETRIES}")
    # ``not (a < t <= b)`` refuses NaN too.
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise ValidationError(
            "timeout", f"must be greater than 0 and at most {MAX_TIMEOUT_SECONDS:g} s (7 days)"
        )
    if priority is not None and not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValidationError("priority", f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
