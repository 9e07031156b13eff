"""Engines: URL normalisation and the SQLite settings taskmill relies on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskmill.core.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY_OPTION = "taskmill_read_only"


def async_url(url: str) -> str:
    """Map the URLs users write (seed 000's ``postgres://``) to async drivers."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(f"database.url: cannot parse {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(f"database.url: unsupported database {backend!r} (use sqlite or postgresql)")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url`` with taskmill's connection settings."""
    full = async_url(url)
    if full.startswith("sqlite"):
        return _sqlite_engine(full)
    return create_async_engine(
        full, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def _sqlite_engine(url: str) -> AsyncEngine:
    if ":memory:" in url or url.endswith("sqlite+aiosqlite://"):
        raise ConfigError("database.url: in-memory SQLite cannot be shared; use a file path")
    # Every transaction ends in an explicit COMMIT or ROLLBACK, so the pool's own
    # rollback-on-return would be one more thread hop per transaction for nothing.
    engine = create_async_engine(url, pool_reset_on_return=None, pool_size=5, max_overflow=5)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE below is ours:
        # writers queue on busy_timeout instead of failing with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers take a deferred transaction: in WAL mode they never block the writer.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
