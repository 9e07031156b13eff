"""The event log: append (inside the writer's transaction) and read."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Insert,
    Row,
    String,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.events import Event, EventFilter, EventType
from taskmill.core.tenants import ALL_MERCHANTS, MerchantScope
from taskmill.store.database import Database
from taskmill.store.schema import events


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; ``occurred_at`` comes from the row it describes."""

    type: EventType
    merchant_id: str
    actor: str
    occurred_at: datetime
    data: Mapping[str, Any]
    job_id: str | None = None
    template_id: str | None = None


# Returned as they are. Exact types: an enum member (a StrEnum is a str) is not one.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """``value`` with datetimes and enums turned into JSON text (ISO 8601, values).

    Plain values and dicts are recognised by their exact type first: a ``job.created``
    event holds a whole row, and the ``isinstance`` checks against ABCs (``Mapping``)
    on each of its values were a quarter of ``schedule_many``'s CPU."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is dict:
        return {str(k): v if type(v) in _PLAIN else jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def iso_text(ts: ColumnElement[Any]) -> ColumnElement[str]:
    """``ts`` as Python's ``datetime.isoformat()`` writes an aware UTC value (what
    ``events.jsonable`` stores), so an event built in SQL reads like one built in Python."""
    utc = func.timezone(literal_column("'UTC'"), ts)
    seconds = func.to_char(utc, literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS'"))
    whole = func.extract("microseconds", utc).cast(BigInteger) % 1_000_000 == 0
    fraction = case((whole, literal_column("''")), else_=func.to_char(utc, literal_column("'.US'")))
    return seconds.concat(fraction).concat(literal_column("'+00:00'"))


def transition_events(
    changed: CTE,
    *,
    event_type: EventType,
    actor: ColumnElement[str],
    from_to: tuple[str, str],
    changes: Mapping[str, ColumnElement[Any]],
    order_by: Sequence[ColumnElement[Any]],
) -> Insert:
    """``INSERT INTO events ... SELECT``: one event per row of ``changed`` (a
    data-modifying CTE ``RETURNING`` the job's ``id``, ``merchant_id`` and
    ``updated_at``), with the data ``transition()`` writes: ``from``, ``to`` and the
    ``changes`` (timestamps through :func:`iso_text`). PostgreSQL only."""
    old, new = from_to
    pairs = [part for name, value in changes.items() for part in (name, value)]
    data = func.jsonb_build_object(
        "from", old, "to", new, "changes", func.jsonb_build_object("status", new, *pairs)
    )  # fmt: skip
    return insert(events).from_select(
        ["occurred_at", "merchant_id", "type", "actor", "job_id", "data"],
        select(
            changed.c.updated_at,
            changed.c.merchant_id,
            literal(event_type.value, String),
            actor,
            changed.c.id,
            data,
        ).order_by(*order_by),
    )


def row(e: NewEvent) -> dict[str, Any]:
    """The ``events`` row for ``e`` (its id comes from the database)."""
    return {
        "occurred_at": e.occurred_at,
        "merchant_id": e.merchant_id,
        "type": e.type.value,
        "actor": e.actor,
        "job_id": e.job_id,
        "template_id": e.template_id,
        "data": jsonable(e.data),
    }


async def append(conn: AsyncConnection, new: Sequence[NewEvent]) -> None:
    """Append ``new`` in the caller's transaction (so the change and its event commit together)."""
    if not new:
        return
    await conn.execute(insert(events), [row(e) for e in new])


async def list_events(db: Database, merchant_id: MerchantScope, flt: EventFilter) -> list[Event]:
    """The merchant's events matching ``flt`` in log order."""
    stmt = select(events).where(events.c.id > flt.after_id).order_by(events.c.id).limit(flt.limit)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(events.c.merchant_id == merchant_id)
    if flt.up_to_id is not None:
        stmt = stmt.where(events.c.id <= flt.up_to_id)
    if flt.job_id is not None:
        stmt = stmt.where(events.c.job_id == flt.job_id)
    if flt.template_id is not None:
        stmt = stmt.where(events.c.template_id == flt.template_id)
    if flt.types:
        stmt = stmt.where(events.c.type.in_([t.value for t in flt.types]))
    async with db.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return [_to_event(row) for row in rows]


def _to_event(row: Row[Any]) -> Event:
    return Event(
        id=row.id,
        occurred_at=row.occurred_at,
        type=EventType(row.type),
        merchant_id=row.merchant_id,
        actor=row.actor,
        job_id=row.job_id,
        template_id=row.template_id,
        data=row.data,
    )
