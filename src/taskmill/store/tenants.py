"""Merchants and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update

from taskmill.core.errors import NotFound
from taskmill.core.events import EventType
from taskmill.core.tenants import ALL_MERCHANTS, ApiKey, Merchant, MerchantScope, Scope
from taskmill.store import events as event_log
from taskmill.store.database import Database
from taskmill.store.schema import api_keys, merchants

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _merchant(row: Row[Any]) -> Merchant:
    return Merchant(id=row.id, name=row.name, created_at=row.created_at)


def _key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        merchant_id=row.merchant_id,
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(Scope(s) for s in row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


async def create_merchant(db: Database, name: str, *, now: datetime) -> Merchant:
    merchant = Merchant(id=str(uuid.uuid4()), name=name, created_at=now)
    async with db.transaction() as conn:
        await conn.execute(merchants.insert().values(id=merchant.id, name=name, created_at=now))
    return merchant


async def get_merchant(db: Database, merchant_id: str) -> Merchant:
    async with db.read() as conn:
        row = (await conn.execute(select(merchants).where(merchants.c.id == merchant_id))).first()
    if row is None:
        raise NotFound("merchant", merchant_id)
    return _merchant(row)


async def list_merchants(db: Database) -> list[Merchant]:
    async with db.read() as conn:
        rows = (await conn.execute(select(merchants).order_by(merchants.c.created_at))).all()
    return [_merchant(row) for row in rows]


@dataclass(frozen=True, slots=True)
class NewApiKey:
    merchant_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: Collection[Scope]
    expires_at: datetime | None


async def create_api_key(db: Database, new: NewApiKey, *, actor: str, now: datetime) -> ApiKey:
    """Store a key's hash (never the key) and an ``api_key.created`` event without secrets."""
    row = {
        "id": str(uuid.uuid4()),
        "merchant_id": new.merchant_id,
        "name": new.name,
        "prefix": new.prefix,
        "key_hash": new.key_hash,
        "scopes": sorted(s.value for s in new.scopes),
        "expires_at": new.expires_at,
        "created_at": now,
    }
    async with db.transaction() as conn:
        found = await conn.execute(select(merchants.c.id).where(merchants.c.id == new.merchant_id))
        if found.first() is None:
            raise NotFound("merchant", new.merchant_id)
        await conn.execute(api_keys.insert().values(row))
        public = {k: v for k, v in row.items() if k != "key_hash"}
        await event_log.append(
            conn, [_key_event(EventType.API_KEY_CREATED, row, actor, now, public)]
        )
        stored = (await conn.execute(select(api_keys).where(api_keys.c.id == row["id"]))).one()
    return _key(stored)


def _key_event(
    kind: EventType, row: dict[str, Any], actor: str, now: datetime, data: dict[str, Any]
) -> event_log.NewEvent:
    return event_log.NewEvent(
        type=kind, merchant_id=row["merchant_id"], actor=actor, occurred_at=now, data=data
    )


async def find_api_key(db: Database, prefix: str) -> tuple[ApiKey, str] | None:
    """The key with this public prefix and its stored hash, or ``None``."""
    async with db.read() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).first()
    return (_key(row), row.key_hash) if row is not None else None


async def list_api_keys(db: Database, merchant_id: MerchantScope) -> list[ApiKey]:
    stmt = select(api_keys).order_by(api_keys.c.created_at)
    if merchant_id is not ALL_MERCHANTS:
        stmt = stmt.where(api_keys.c.merchant_id == merchant_id)
    async with db.read() as conn:
        return [_key(row) for row in (await conn.execute(stmt)).all()]


async def revoke_api_key(db: Database, key_id: str, *, actor: str, now: datetime) -> ApiKey:
    """Revoke a key (idempotent: the first revocation's time and event stay)."""
    async with db.transaction() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound("api_key", key_id)
        if row.revoked_at is None:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now)
            )
            data = {"id": key_id, "prefix": row.prefix}
            mapping = {"merchant_id": row.merchant_id}
            await event_log.append(
                conn, [_key_event(EventType.API_KEY_REVOKED, mapping, actor, now, data)]
            )
        stored = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()
    return _key(stored)


async def touch_api_key(db: Database, key: ApiKey, now: datetime) -> None:
    """Record use, at most once per minute per key (a write per request would not scale)."""
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    async with db.transaction() as conn:
        await conn.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key.id,
                (api_keys.c.last_used_at.is_(None))
                | (api_keys.c.last_used_at < now - LAST_USED_RESOLUTION),
            )
            .values(last_used_at=now)
        )
