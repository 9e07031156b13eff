"""Event handlers' cursors over the event log: where each has read to, and which process
holds it (a lease, so one process reads at a time and another takes over after a crash)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.store.database import Database
from taskmill.store.schema import event_cursors, events


async def cursor_position(db: Database, name: str) -> int | None:
    """Where cursor ``name`` has read to; ``None`` if it does not exist yet."""
    async with db.read() as conn:
        position = (
            await conn.execute(select(event_cursors.c.position).where(event_cursors.c.name == name))
        ).scalar_one_or_none()
    return None if position is None else int(position)


async def take_cursor(
    db: Database, name: str, *, holder: str, lease_seconds: float, now: datetime
) -> int | None:
    """Lease cursor ``name`` to ``holder`` (created at the log's end, the first time: a new
    handler sees what happens from now on) and return its position; ``None`` while
    another holder's lease runs."""

    async def take_in(conn: AsyncConnection) -> int | None:
        end = (await conn.execute(select(func.coalesce(func.max(events.c.id), 0)))).scalar_one()
        await conn.execute(
            db.dialect.insert_ignoring_conflicts(event_cursors).values(
                name=name, position=end, leased_by=None, lease_until=None, updated_at=now
            )
        )
        taken = await conn.execute(
            update(event_cursors)
            .where(
                event_cursors.c.name == name,
                or_(
                    event_cursors.c.leased_by.is_(None),
                    event_cursors.c.leased_by == holder,
                    event_cursors.c.lease_until < now,
                ),
            )
            .values(leased_by=holder, lease_until=now + timedelta(seconds=lease_seconds))
            .returning(event_cursors.c.position)
        )
        position = taken.scalar_one_or_none()
        return None if position is None else int(position)

    return await db.write(take_in)


async def advance_cursor(
    db: Database, name: str, *, holder: str, position: int, lease_seconds: float, now: datetime
) -> bool:
    """Move cursor ``name`` to ``position`` and renew the lease, if ``holder`` still holds
    it (``False``: it expired and another process took over; it will read from where this
    one last advanced, so events may be handled twice, never skipped)."""

    async def advance_in(conn: AsyncConnection) -> bool:
        moved = await conn.execute(
            update(event_cursors)
            .where(event_cursors.c.name == name, event_cursors.c.leased_by == holder)
            .values(
                position=position,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
        return bool(moved.rowcount)

    return await db.write(advance_in)


async def release_cursor(db: Database, name: str, *, holder: str) -> None:
    """Give the lease up (at shutdown), so another process takes over at once."""

    async def release_in(conn: AsyncConnection) -> None:
        await conn.execute(
            update(event_cursors)
            .where(event_cursors.c.name == name, event_cursors.c.leased_by == holder)
            .values(leased_by=None, lease_until=None)
        )

    await db.write(release_in)


# How many ids one horizon read looks at: the PK range only, so cheap.
HORIZON_SCAN = 10_000


async def event_horizon(db: Database, after: int, *, gap_seconds: float, now: datetime) -> int:
    """The highest event id a reader after ``after`` may go up to without missing one:
    ids are taken at insert, so on PostgreSQL a transaction holding a lower id may commit
    after a higher one is visible. A gap younger than ``gap_seconds`` (by the time of the
    event after it) stops the horizon before it; an older one is a rolled-back insert's."""
    stmt = (
        select(events.c.id, events.c.occurred_at)
        .where(events.c.id > after)
        .order_by(events.c.id)
        .limit(HORIZON_SCAN)
    )
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    horizon = after
    for event_id, occurred_at in rows:
        if event_id != horizon + 1 and now - occurred_at < timedelta(seconds=gap_seconds):
            break
        horizon = event_id
    return horizon
