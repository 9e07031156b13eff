"""Migrations are product: they must produce exactly ``schema.py`` and reverse cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select

from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.store import migrate
from taskmill.store.database import Database
from taskmill.store.schema import merchants, metadata


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_upgrade_matches_schema(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        assert await migrate.current_revision(db) is None
        await migrate.upgrade(db)
        assert await migrate.is_current(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            default = (await conn.execute(select(merchants.c.name))).scalars().all()
        assert default == ["default"]
    finally:
        await db.close()


async def test_migrations_downgrade_then_upgrade_again(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate.upgrade(db)
        await migrate.downgrade(db, "base")
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}
        await migrate.upgrade(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            ids = (await conn.execute(select(merchants.c.id))).scalars().all()
        assert ids == [DEFAULT_MERCHANT_ID]
    finally:
        await db.close()


async def test_migrations_upgrade_is_idempotent(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        await migrate.upgrade(db)
        await migrate.upgrade(db)  # every start runs it
        assert await migrate.current_revision(db) == migrate.head_revision()
    finally:
        await db.close()
