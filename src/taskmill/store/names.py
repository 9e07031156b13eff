"""Seed 003's task ids: the caller's own name for a template (its ``name``) or a job (its
``idempotency_key``), both unique per merchant, resolved to the id."""

from __future__ import annotations

from sqlalchemy import Column, Table, or_, select

from taskmill.store.database import Database
from taskmill.store.schema import jobs, templates


async def _find_id(db: Database, table: Table, name: Column[str], ident: str, merchant: str) -> str:
    """The id of the merchant's row whose id or, failing that, ``name`` is ``ident``;
    ``ident`` itself when neither matches (the caller's lookup then says not found)."""
    stmt = select(table.c.id).where(
        table.c.merchant_id == merchant, or_(table.c.id == ident, name == ident)
    )
    async with db.read() as conn:
        found = [str(row.id) for row in await conn.execute(stmt)]
    return ident if not found or ident in found else found[0]


async def find_template_id(db: Database, ident: str, merchant_id: str) -> str:
    return await _find_id(db, templates, templates.c.name, ident, merchant_id)


async def find_job_id(db: Database, ident: str, merchant_id: str) -> str:
    return await _find_id(db, jobs, jobs.c.idempotency_key, ident, merchant_id)
