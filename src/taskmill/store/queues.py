"""Paused queues: pause, resume, and the list workers read before they claim."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import EventType
from taskmill.core.queues import QueuePause
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.schema import queue_pauses


def _event(
    kind: EventType, name: str, merchant_id: str, actor: str, now: datetime
) -> event_log.NewEvent:
    return event_log.NewEvent(kind, merchant_id, actor, now, {"queue": name})


async def pause_queue(
    db: Database, name: str, *, merchant_id: str, actor: str, now: datetime
) -> QueuePause:
    """Pause ``name`` (an event records who did); pausing a paused queue changes nothing."""

    async def pause_in(conn: AsyncConnection) -> QueuePause:
        # Two operators pausing at once: one row, one event (the insert that wrote it).
        inserted = await conn.execute(
            db.dialect.insert_ignoring_conflicts(queue_pauses)
            .values(name=name, paused_at=now, paused_by=actor)
            .returning(queue_pauses.c.name)
        )
        if inserted.first() is not None:
            await event_log.append(
                conn, [_event(EventType.QUEUE_PAUSED, name, merchant_id, actor, now)]
            )
        paused = await _pause_of(conn, name)
        assert paused is not None  # inserted now, or earlier and seen by this transaction
        return paused

    return await db.write(pause_in)


async def resume_queue(
    db: Database, name: str, *, merchant_id: str, actor: str, now: datetime
) -> bool:
    """Resume ``name``; ``False`` if it was not paused (nothing recorded then)."""

    async def resume_in(conn: AsyncConnection) -> bool:
        deleted = await conn.execute(delete(queue_pauses).where(queue_pauses.c.name == name))
        if not deleted.rowcount:
            return False
        await event_log.append(
            conn, [_event(EventType.QUEUE_RESUMED, name, merchant_id, actor, now)]
        )
        return True

    return await db.write(resume_in)


async def paused_queues(db: Database) -> list[QueuePause]:
    """Every paused queue, by name."""
    async with db.read() as conn:
        rows = await conn.execute(select(queue_pauses).order_by(queue_pauses.c.name))
        return [QueuePause(r.name, r.paused_at, r.paused_by) for r in rows]


async def _pause_of(conn: AsyncConnection, name: str) -> QueuePause | None:
    row = (
        await conn.execute(select(queue_pauses).where(queue_pauses.c.name == name))
    ).one_or_none()
    return None if row is None else QueuePause(row.name, row.paused_at, row.paused_by)
