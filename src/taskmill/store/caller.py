"""Creating jobs in the caller's own transaction (transactional enqueue, as River's
``InsertTx``): the application's SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` on
taskmill's database writes the job and its events beside its own rows, so both exist
if and only if the caller commits.

The job is inserted ``scheduled`` (never ``queued``: no broker hint may go out before
the commit); the queue populator queues it and publishes the hint. On PostgreSQL the
``taskmill_due`` notification is queued inside the transaction (delivered at commit,
dropped at rollback); :func:`on_commit` wakes this process's populator once the
caller commits; the populator's poll is the safety net for both.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from taskmill.core.errors import Conflict, ValidationError
from taskmill.store.database import Database
from taskmill.store.errors import translated
from taskmill.store.jobs import (
    CreatedJob,
    NewJob,
    check_bulk,
    create_batch_in,
    create_in,
    matching_job,
    retrying_conflicts,
)

FIELD = "connection"


async def connection_of(target: object, db: Database) -> AsyncConnection:
    """The ``AsyncConnection`` under ``target`` (an ``AsyncSession`` begins its
    transaction here if it has none), checked to be on taskmill's database."""
    if isinstance(target, AsyncSession):
        with translated():
            conn = await target.connection()
    elif isinstance(target, AsyncConnection):
        conn = target
    else:
        raise ValidationError(FIELD, "must be a SQLAlchemy AsyncConnection or AsyncSession")
    if not same_database(conn.engine.url, db.engine.url):
        raise ValidationError(FIELD, "is not connected to taskmill's database")
    return conn


def same_database(theirs: URL, ours: URL) -> bool:
    """Whether two URLs name one database: the same backend and database name (on
    SQLite, the same file). Hosts are not compared: one server has many names."""
    if theirs.get_backend_name() != ours.get_backend_name():
        return False
    if ours.get_backend_name() == "sqlite":
        mine = _sqlite_file(ours)
        return mine is not None and _sqlite_file(theirs) == mine
    return theirs.database == ours.database


def _sqlite_file(url: URL) -> Path | None:
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name).resolve()


async def create_on(
    target: object, db: Database, new: NewJob, *, actor: str, now: datetime
) -> CreatedJob:
    """``jobs.create_job`` in the caller's transaction. A concurrent producer taking the
    same idempotency or unique key first (PostgreSQL) rolls back only a savepoint
    around the insert, and its job is the answer: the caller's transaction goes on."""
    conn = await connection_of(target, db)
    with translated():
        if db.dialect.name != "postgresql":
            # SQLite: the caller's transaction holds the only write lock once it wrote.
            return await create_in(conn, db.dialect, new, actor=actor, now=now)
        try:
            async with conn.begin_nested():
                with translated():
                    return await create_in(conn, db.dialect, new, actor=actor, now=now)
        except Conflict:
            existing = await matching_job(conn, new)
            if existing is None:
                raise
            return CreatedJob(existing, created=False)


async def create_many_on(
    target: object, db: Database, news: Sequence[NewJob], *, actor: str, now: datetime
) -> list[CreatedJob]:
    """``jobs.create_jobs`` in the caller's transaction. A concurrent producer taking one
    of the batch's unique keys first (PostgreSQL) rolls back only a savepoint around the
    batch, which is tried again: the key's job is then the answer in its place, and the
    caller's transaction goes on."""
    check_bulk(news)
    conn = await connection_of(target, db)
    with translated():
        if db.dialect.name != "postgresql":
            return await create_batch_in(conn, db.dialect, news, actor=actor, now=now)

        async def in_savepoint() -> list[CreatedJob]:
            async with conn.begin_nested():
                with translated():  # a refused key is a Conflict inside the savepoint
                    return await create_batch_in(conn, db.dialect, news, actor=actor, now=now)

        return await retrying_conflicts(in_savepoint)


class _Pending:
    """The callbacks to call at a connection's or session's next commit."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def committed(self, *_: Any) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()

    def rolled_back(self, *_: Any) -> None:
        self.callbacks = []


# One listener pair per connection or session, however many jobs it creates.
_pending: weakref.WeakKeyDictionary[Connection | Session, _Pending] = weakref.WeakKeyDictionary()


def on_commit(target: object, callback: Callable[[], None]) -> None:
    """Call ``callback`` when ``target``'s transaction commits; never if it rolls back.
    On an ``AsyncSession``, after the commit (``after_commit``); on an
    ``AsyncConnection``, as the commit is sent (``commit``, the only hook a Core
    connection has): the callback must not need the committed rows at once."""
    if isinstance(target, AsyncSession):
        key: Connection | Session = target.sync_session
        commit, rollback = "after_commit", "after_rollback"
    elif isinstance(target, AsyncConnection):
        key = target.sync_connection or _closed()
        commit, rollback = "commit", "rollback"
    else:
        raise ValidationError(FIELD, "must be a SQLAlchemy AsyncConnection or AsyncSession")
    pending = _pending.get(key)
    if pending is None:
        pending = _pending[key] = _Pending()
        event.listen(key, commit, pending.committed)
        event.listen(key, rollback, pending.rolled_back)
    pending.callbacks.append(callback)


def _closed() -> Connection:
    raise ValidationError(FIELD, "is closed")
