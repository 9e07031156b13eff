"""Run the Alembic migrations shipped in the package (at start-up and ``taskmill db upgrade``).

Alembic (11.5 MB of a process's memory with Mako) is imported only when a migration
runs: every process checks the schema at start, and once it is current the check is
one query on ``alembic_version`` against the newest file in ``migrations/versions``
(a linear chain named ``NNNN_*.py``, revision ``NNNN``; a test holds the two to
Alembic's own view).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import Connection

from taskmill.store.database import Database
from taskmill.store.errors import translated

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to ``connection``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(connection), revision)


def _current(connection: Connection) -> str | None:
    """What Alembic's ``MigrationContext.get_current_revision`` reads, without Alembic."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


@functools.cache
def head_revision() -> str | None:
    """The newest revision shipped: the highest ``NNNN`` of ``versions/NNNN_*.py``."""
    numbers = [p.name[:4] for p in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")]
    return max(numbers, default=None)


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start (no-op when current)
    and from any number of processes at once: each waits for the others' migration
    (``Dialect.migration_lock``), then finds the schema current."""
    if revision == "head" and await is_current(db):
        return  # every start of every process once migrated: no lock, no Alembic
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
