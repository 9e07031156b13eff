"""PostgreSQL ``LISTEN/NOTIFY`` wake-ups, so other processes react to new work at once
instead of at their next poll. On SQLite these are no-ops (one process, in-process
wake-ups); a lost notification only costs a poll interval, never a job."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.store.dialect import Dialect

DUE = "taskmill_due"  # a job became scheduled (created, retried, rescued, released)
QUEUED = "taskmill_queued"  # jobs became queued (for workers on the database broker)
TEMPLATES = "taskmill_templates"  # a template was created or changed
CANCELLED = "taskmill_cancelled"  # a job was cancelled (payload: its id)
CHANNELS = (DUE, QUEUED, TEMPLATES, CANCELLED)
# Jobs finished (succeeded, failed, cancelled): for processes waiting on results
# (``app.wait``, ``GET /jobs/{id}?wait=``), who listen on it alone; no payload, so one
# transaction finishing many jobs sends one notification.
FINISHED = "taskmill_finished"


def notification(channel: str, payload: str = "") -> sa.Select[Any]:
    """The PostgreSQL statement that notifies ``channel``, delivered at commit."""
    return sa.select(sa.func.pg_notify(channel, payload))


async def notify(conn: AsyncConnection, dialect: Dialect, channel: str, payload: str = "") -> None:
    """Queue a notification on ``channel``; PostgreSQL delivers it when the caller's
    transaction commits (and folds duplicates within one transaction)."""
    if dialect.notifies:
        await conn.execute(notification(channel, payload))
