"""Run the Alembic migrations shipped in the package (at start-up and ``taskmill db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from taskmill.store.database import Database
from taskmill.store.errors import translated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start (no-op when current)
    and from any number of processes at once: each waits for the others' migration
    (``Dialect.migration_lock``), then finds the schema current."""
    lock = db.dialect.migration_lock()
    with translated():
        async with db.engine.begin() as conn:
            if lock is not None:
                await conn.execute(lock)
            await conn.run_sync(_upgrade, revision)


async def downgrade(db: Database, revision: str) -> None:
    """Step the schema back to ``revision`` (``base`` drops everything)."""
    lock = db.dialect.migration_lock()
    with translated():
        async with db.engine.begin() as conn:
            if lock is not None:
                await conn.execute(lock)
            await conn.run_sync(_downgrade, revision)


async def current_revision(db: Database) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    with translated():
        async with db.engine.connect() as conn:
            return await conn.run_sync(_current)


async def is_current(db: Database) -> bool:
    """Whether the database is at the newest migration (``/readyz``)."""
    return await current_revision(db) == head_revision()
