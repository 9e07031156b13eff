"""Queues: a name jobs are put in and workers take from, which an operator may pause."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.errors import ValidationError

MAX_QUEUE_NAME = 100
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]+")


def check_queue_name(name: str, field_name: str = "queue") -> str:
    """``name`` if it can name a queue (1-100 of ``A-Z a-z 0-9 _ . : -``)."""
    if not 1 <= len(name) <= MAX_QUEUE_NAME or not _QUEUE_NAME.fullmatch(name):
        raise ValidationError(
            field_name, f"must be 1-{MAX_QUEUE_NAME} letters, digits or _ . : - characters"
        )
    return name


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A paused queue: its jobs stay ``queued`` (or ``scheduled``) until it is resumed;
    jobs already running finish."""

    name: str
    paused_at: datetime
    paused_by: str
