"""Wake-ups, so other processes react to new work at once instead of at their next poll:
PostgreSQL's ``LISTEN/NOTIFY``; on SQLite, datagrams sent after the commit
(``sqlite/wakeups.py``). A lost notification only costs a poll interval, never a job."""

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

#: Where a write transaction on a database without NOTIFY (SQLite) collects the
#: ``(channel, payload)`` it notified (``Connection.info``): sent once it committed.
PENDING = "taskmill_pending_wakeups"


def notification(channel: str, payload: str = "") -> sa.Select[Any]:
    """The PostgreSQL statement that notifies ``channel``, delivered at commit."""
    return sa.select(sa.func.pg_notify(channel, payload))


async def notify(conn: AsyncConnection, dialect: Dialect, channel: str, payload: str = "") -> None:
    """Queue a notification on ``channel``; PostgreSQL delivers it when the caller's
    transaction commits (and folds duplicates within one transaction). On SQLite it is
    collected on the connection and sent after the commit by the database handle."""
    if dialect.notifies:
        await conn.execute(notification(channel, payload))
    else:
        pending = conn.info.get(PENDING)
        if pending is not None:
            pending.add((channel, payload))
