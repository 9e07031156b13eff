"""Engines: URL normalisation and the SQLite settings taskmill relies on."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskmill.core.errors import ConfigError
from taskmill.observability.logs import redact_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The writer thread waits for another process's write lock in steps this short (doubling
# up to the maximum): SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25,
# 50, 50, 100 ms, so a write that collided with another process's for one millisecond
# often waited 5-50 ms, the tail of a job's start latency across processes.
WRITER_BUSY_STEP_SECONDS = (0.0001, 0.002)
READ_ONLY_OPTION = "taskmill_read_only"


def async_url(url: str) -> str:
    """Map the URLs users write (seed 000's ``postgres://``) to async drivers."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"database.url: cannot parse {redact_url(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ConfigError(f"database.url: unsupported database {backend!r} (use sqlite or postgresql)")


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    transaction_pooler: bool = False,
    commits_without_flush: bool = False,
) -> AsyncEngine:
    """An async engine for ``url`` with taskmill's connection settings;
    ``transaction_pooler``: ``url`` reaches PostgreSQL through PgBouncer (or another
    pooler) in transaction pooling mode (``TRANSACTION_POOLER_ARGS``);
    ``commits_without_flush``: PostgreSQL only, its sessions commit with
    ``synchronous_commit = off`` (the claims' engine, ADR 0017)."""
    full = async_url(url)
    if full.startswith("sqlite"):
        return _sqlite_engine(full)
    full, connect_args = _server_settings(full)
    if commits_without_flush:
        settings = connect_args.setdefault("server_settings", {})
        settings["synchronous_commit"] = "off"
    if transaction_pooler:
        connect_args |= TRANSACTION_POOLER_ARGS
    try:
        engine = create_async_engine(
            full, pool_size=pool_size, max_overflow=pool_size, connect_args=connect_args
        )
    except ImportError as exc:  # asyncpg is the postgres extra
        raise ConfigError(
            "database.url: PostgreSQL needs the postgres extra: pip install 'taskmill[postgres]'"
        ) from exc
    _ping_when_idle(engine)
    return engine


# ``pool_pre_ping`` pings on every checkout, and on asyncpg a ping is two round trips
# (BEGIN; ROLLBACK): the hot path (populator, claims, outcomes) paid them on every
# transaction, about a quarter of its round trips (bench.compare's profile). Only a
# connection that sat in the pool this long is pinged now: after a server restart those
# are the dead ones. One that dies in use raises a disconnect error, which makes the
# pool discard every connection older than it; the services retry (StoreError).
PING_IDLE_SECONDS = 2.0
_IDLE_SINCE = "taskmill_idle_since"


def _ping_when_idle(engine: AsyncEngine) -> None:
    sync = engine.sync_engine

    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < PING_IDLE_SECONDS:
            return
        try:
            sync.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool retries the checkout on a fresh connection
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc

    event.listen(sync, "checkin", checked_in)
    event.listen(sync, "checkout", checked_out)


# A transaction pooler hands each transaction (each autocommit statement) to whichever
# server connection is free, so a named prepared statement made on one is missing, or
# already taken under the same name, on the next: asyncpg's statement cache is off (its
# statements go unnamed, parsed again where they run) and SQLAlchemy's too, and the
# statements SQLAlchemy prepares are unnamed (prepared and run in one transaction).
TRANSACTION_POOLER_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: "",
}


# libpq URL parameters that are server settings; asyncpg takes them as ``server_settings``
# (passed as keyword arguments, as SQLAlchemy does with the URL's query, they fail).
SERVER_SETTINGS = ("application_name",)


def _server_settings(url: str) -> tuple[str, dict[str, Any]]:
    """Move ``?application_name=`` (which names the connections in ``pg_stat_activity``,
    one name per service in a deployment) from the URL to asyncpg's ``server_settings``."""
    parsed = make_url(url)
    settings = {k: str(v) for k, v in parsed.query.items() if k in SERVER_SETTINGS}
    if not settings:
        return url, {}
    rest = parsed.difference_update_query(settings)
    return rest.render_as_string(hide_password=False), {"server_settings": settings}


def _sqlite_engine(url: str) -> AsyncEngine:
    if ":memory:" in url or url.endswith("sqlite+aiosqlite://"):
        raise ConfigError("database.url: in-memory SQLite cannot be shared; use a file path")
    # Every transaction ends in an explicit COMMIT or ROLLBACK, so the pool's own
    # rollback-on-return would be one more thread hop per transaction for nothing.
    engine = create_async_engine(url, pool_reset_on_return=None, pool_size=5, max_overflow=5)
    _sqlite_settings(engine.sync_engine)
    return engine


def sqlite_sync_engine(url: URL) -> Engine:
    """A synchronous (pysqlite) engine on the file of the async engine at ``url``, with
    the same settings and one connection: ``SQLiteWriter``'s, used from its one thread."""
    engine = sa_create_engine(
        url.set(drivername="sqlite+pysqlite"),
        pool_reset_on_return=None,
        pool_size=1,
        max_overflow=0,
    )
    _sqlite_settings(engine, short_waits=True)
    return engine


def _begin_immediate_in_short_waits(cursor: Any) -> None:
    """``BEGIN IMMEDIATE`` retried every 0.1-2 ms for up to the busy timeout (the
    connection's own busy timeout is 0: see ``WRITER_BUSY_STEP_SECONDS``)."""
    first, most = WRITER_BUSY_STEP_SECONDS
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    step = first
    while True:
        try:
            cursor.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(step)
        step = min(step * 2, most)


def _sqlite_settings(engine: Engine, *, short_waits: bool = False) -> None:
    """The pragmas and transaction control of every SQLite connection; ``short_waits``
    (a synchronous engine used from its own thread only, which may sleep): its write
    transactions wait for the lock in short steps instead of SQLite's busy handler."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE below is ours:
        # writers queue on busy_timeout instead of failing with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={0 if short_waits else SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers take a deferred transaction: in WAL mode they never block the writer.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        if short_waits and not read_only:
            cursor = conn.connection.driver_connection.cursor()
            try:
                _begin_immediate_in_short_waits(cursor)
            finally:
                cursor.close()
        else:
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
