"""The hot statements, run on the asyncpg connection itself (PostgreSQL only).

SQLAlchemy builds and compiles them once; each execution then binds its values through
the types' own processors and calls asyncpg directly. A producer's insert, the
populator's round, a claim and a batch of successes lie on every job's way through the
system; SQLAlchemy's execution layer around each (execution context, cursor adapter,
result object) cost 0.4-0.5 ms of CPU per statement, more than asyncpg's own work
(``bench/README.md``). The connection still comes from the engine's pool, in
autocommit; the engine's ``before_cursor_execute`` listeners still see each statement,
and driver errors become taskmill errors (``store.errors.from_asyncpg``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Select
from sqlalchemy.types import TypeEngine

from taskmill.core.errors import StoreUnavailable
from taskmill.store.errors import from_asyncpg
from taskmill.store.postgres.database import PostgresDatabase as Database

Processor = Callable[[Any], Any]


@dataclass(slots=True)
class Compiled:
    """A statement as asyncpg runs it: SQL with ``$n`` placeholders, each placeholder's
    bind name and value processor, the values SQLAlchemy bound itself (literals), and
    the result columns' names and types; their processors depend on the types the
    server sends (``numeric`` or ``float8`` for a ``Float``), so they are looked up at
    the first execution."""

    sql: str
    binds: tuple[tuple[str, Processor | None], ...]
    fixed: Mapping[str, Any]
    column_types: tuple[tuple[str, TypeEngine[Any]], ...]
    dialect: Dialect
    columns: tuple[tuple[str, Processor | None], ...] | None = None

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, process in self.binds:
            value = values[name] if name in values else self.fixed[name]
            args.append(value if process is None or value is None else process(value))
        return args

    def learn_columns(self, oids: Sequence[int]) -> None:
        self.columns = tuple(
            (name, type_.dialect_impl(self.dialect).result_processor(self.dialect, oid))
            for (name, type_), oid in zip(self.column_types, oids, strict=True)
        )

    def row(self, record: Any) -> dict[str, Any]:
        assert self.columns is not None  # learnt before the first row is read
        return {
            name: value if process is None or value is None else process(value)
            for (name, process), value in zip(self.columns, record, strict=True)
        }


@functools.lru_cache(maxsize=512)
def compile_statement(statement: Select[Any], dialect: Dialect) -> Compiled:
    """``statement`` compiled for ``dialect`` (the engine's), once per statement object:
    the callers build theirs once per shape and keep them."""
    compiled = statement.compile(dialect=dialect)
    if any(bind.expanding for bind in compiled.binds.values()):
        # IN lists render at each execution. Constant ones (``status.in_([...])``) are
        # rendered here once instead, which takes a value for every parameter: the
        # statement's own are declared ``bindparam(name, None, ...)``. Lists that
        # change per call are bound as arrays (``= ANY``).
        try:
            compiled = statement.compile(
                dialect=dialect, compile_kwargs={"render_postcompile": True}
            )
        except InvalidRequestError as exc:
            raise ValueError(f"an expanding parameter without a value: {exc}") from exc
    binds = []
    for name in compiled.positiontup or []:
        # An element of a rendered IN list ("status_1_2") takes its list's type.
        bind = compiled.binds[name if name in compiled.binds else name.rsplit("_", 1)[0]]
        binds.append((name, bind.type.dialect_impl(dialect).bind_processor(dialect)))
    columns = tuple((column.name, column.type) for column in statement.selected_columns)
    return Compiled(compiled.string, tuple(binds), dict(compiled.params), columns, dialect)


async def fetch(
    db: Database, statement: Select[Any], values: Mapping[str, Any], *, flush: bool = True
) -> list[dict[str, Any]]:
    """Run ``statement`` with ``values`` as one autocommit statement; its rows as dicts
    (column name to value, processed as SQLAlchemy's result would be). ``flush=False``:
    its commit does not wait for the WAL flush (``Database.autocommit``)."""
    compiled = compile_statement(statement, db.engine.dialect)
    arguments = compiled.arguments(values)
    async with db.autocommit(flush=flush) as raw:
        records = await _run(raw, db, compiled, arguments)
    return [compiled.row(record) for record in records]


async def _run(
    raw: PoolProxiedConnection, db: Database, compiled: Compiled, arguments: list[Any]
) -> list[Any]:
    driver: Any = raw.driver_connection
    # The engine's before_cursor_execute listeners see this statement as they see every
    # other (bench.support.StatementLog explains the populator's plan from it); no
    # connection, cursor or execution context exists here. Without a listener this
    # costs a loop over nothing.
    for listener in db.engine.sync_engine.dispatch.before_cursor_execute:
        listener(None, None, compiled.sql, tuple(arguments), None, False)
    try:
        if compiled.columns is None:
            # Unnamed: only its description is wanted, and a named one would outlive
            # it on a server connection a transaction pooler may give another client.
            prepared = await driver.prepare(compiled.sql, name="")
            compiled.learn_columns([a.type.oid for a in prepared.get_attributes()])
        return list(await driver.fetch(compiled.sql, *arguments))
    except Exception as exc:
        error = from_asyncpg(exc, closed=bool(driver.is_closed()))
        if error is None:
            raise
        if isinstance(error, StoreUnavailable):
            raw.invalidate()  # the pool must not hand this connection out again
        raise error from exc
