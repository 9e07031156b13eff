"""Event types: every state change is one row in ``events`` (DESIGN.md §3)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class EventType(enum.StrEnum):
    """The ``type`` column of ``events``."""

    JOB_CREATED = "job.created"
    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_RETRY_SCHEDULED = "job.retry_scheduled"
    JOB_LEASE_EXPIRED = "job.lease_expired"
    JOB_RELEASED = "job.released"
    JOB_CANCELLED = "job.cancelled"
    JOB_RETRIED = "job.retried"
    TEMPLATE_CREATED = "template.created"
    TEMPLATE_UPDATED = "template.updated"
    TEMPLATE_DELETED = "template.deleted"
    TEMPLATE_TICK_SKIPPED = "template.tick_skipped"
    TEMPLATE_ERROR = "template.error"
    QUEUE_PAUSED = "queue.paused"
    QUEUE_RESUMED = "queue.resumed"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the event log.

    ``data`` for job events holds ``from``/``to`` statuses and ``changes``: every
    ``jobs`` column the transition wrote, so the log alone rebuilds the projection.
    """

    id: int
    occurred_at: datetime
    type: EventType
    merchant_id: str
    actor: str
    job_id: str | None
    template_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list; ``after_id`` is the keyset cursor."""

    job_id: str | None = None
    template_id: str | None = None
    types: Sequence[EventType] = ()
    after_id: int = 0
    up_to_id: int | None = None
    limit: int = 1000
