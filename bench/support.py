"""What ``bench.schedules`` and ``bench.api`` share.

Scratch databases (a SQLite file in a temporary directory, or a PostgreSQL database
``taskmill_bench_<random>`` created and dropped by the bench), bulk seeding of the
``jobs`` and ``templates`` tables with SQLAlchemy Core ``insert`` executemany (no events,
no services: the fastest way to a large table), percentiles and progress lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.noop_app import TASK
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus, ScheduleType
from taskmill.core.templates import MisfirePolicy, OverlapPolicy
from taskmill.store.database import Database
from taskmill.store.engine import async_url
from taskmill.store.schema import jobs, templates

BACKENDS = ("sqlite", "postgresql")
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SEED_BATCH = 10_000
DROP_ATTEMPTS = 10
DROP_RETRY_SECONDS = 3.0
# Seeded jobs: created over the day before the seed (distinct, increasing created_at),
# due from an hour after it over the next 30 days, except the few made due on purpose.
CREATED_SPAN = timedelta(days=1)
FUTURE_OFFSET = timedelta(hours=1)
FUTURE_SPAN = timedelta(days=30)
# Seeded templates: an hourly interval, next ticks spread over the coming hour.
TEMPLATE_INTERVAL_SECONDS = 3600.0
TEMPLATE_OFFSET = timedelta(minutes=5)


class BenchError(Exception):
    """The bench could not finish a measurement (not a performance verdict)."""


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def machine() -> str:
    """CPU count and load average: other work on the machine skews every figure here."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} (1, 5, 15 min)"


def revision() -> str:
    """The commit measured, and whether src/ differed from it (uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True
        ).stdout.splitlines()
    except OSError:
        return "unknown (no git)"
    return f"{head or 'unknown'}" + (f" + {len(dirty)} uncommitted files in src/" if dirty else "")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Spread:
    """p50, p99, max (and count) of some millisecond figures."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        ordered = sorted(values)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1])


# -- scratch databases ----------------------------------------------------------------------


def scratch_name() -> str:
    return f"taskmill_bench_{secrets.token_hex(4)}"


def _admin_engine(admin_url: str) -> AsyncEngine:
    return create_async_engine(async_url(admin_url), isolation_level="AUTOCOMMIT")


async def create_postgres_database(admin_url: str, name: str) -> str:
    """Create database ``name`` next to ``admin_url``'s and return taskmill's URL for it."""
    engine = _admin_engine(admin_url)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(admin_url: str, name: str) -> None:
    """Drop the bench's own database (its remaining sessions, all the bench's, are ended).

    Retried for a while: a server restarting under the bench would otherwise leave it.
    """
    for attempt in range(1, DROP_ATTEMPTS + 1):
        engine = _admin_engine(admin_url)
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except SQLAlchemyError as exc:
            if attempt == DROP_ATTEMPTS:
                raise BenchError(
                    f'could not drop database {name} (drop it by hand: DROP DATABASE "{name}"):'
                    f" {exc}"
                ) from exc
            progress(f"dropping {name} failed, retrying: {str(exc).splitlines()[0]}")
            await asyncio.sleep(DROP_RETRY_SECONDS)
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def scratch_database(backend: str, workdir: Path, admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for ``backend``; a PostgreSQL one is dropped on exit.

    A failed drop is reported on stderr, and raised only if nothing else failed first.
    """
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'{scratch_name()}.db'}"
        return
    name = scratch_name()
    url = await create_postgres_database(admin_url, name)
    progress(f"created PostgreSQL database {name}")
    try:
        yield url
    except BaseException:
        try:
            await drop_postgres_database(admin_url, name)
        except BenchError as exc:
            progress(str(exc))
        raise
    await drop_postgres_database(admin_url, name)
    progress(f"dropped PostgreSQL database {name}")


@contextlib.contextmanager
def scratch_database_sync(backend: str, workdir: Path, admin_url: str) -> Iterator[str]:
    """:func:`scratch_database` for code that runs its own event loops (subprocesses)."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'{scratch_name()}.db'}"
        return
    name = scratch_name()
    url = asyncio.run(create_postgres_database(admin_url, name))
    progress(f"created PostgreSQL database {name}")
    try:
        yield url
    except BaseException:
        try:
            asyncio.run(drop_postgres_database(admin_url, name))
        except BenchError as exc:
            progress(str(exc))
        raise
    asyncio.run(drop_postgres_database(admin_url, name))
    progress(f"dropped PostgreSQL database {name}")


# -- bulk seeding ---------------------------------------------------------------------------


def job_row(i: int, count: int, now: datetime, due: bool) -> dict[str, Any]:
    """Seeded job ``i`` of ``count``: every column, as ``store.jobs.job_row`` fills them."""
    created = now - CREATED_SPAN + CREATED_SPAN * (i / count)
    future = now + FUTURE_OFFSET + FUTURE_SPAN * (i / count)
    run_at = now - timedelta(seconds=1) if due else future
    return {
        "id": str(uuid.uuid4()),
        "merchant_id": DEFAULT_MERCHANT_ID,
        "template_id": None,
        "task_type": TASK,
        "queue": "default",
        "priority": 0,
        "payload": {"n": i},
        "status": JobStatus.SCHEDULED,
        "schedule_type": ScheduleType.ONE_TIME,
        "run_at": run_at,
        "scheduled_for": None,
        "attempt": 0,
        "max_attempts": 4,
        "timeout_seconds": 300.0,
        "idempotency_key": None,
        "worker_id": None,
        "lease_expires_at": None,
        "queued_at": None,
        "started_at": None,
        "finished_at": None,
        "result": None,
        "last_error": None,
        "cancel_reason": None,
        "created_at": created,
        "updated_at": created,
    }


def template_row(i: int, count: int, now: datetime, due: bool) -> dict[str, Any]:
    """Seeded template ``i`` of ``count``: an active hourly interval, every column filled."""
    if due:
        next_run_at = now - timedelta(seconds=1)
    else:
        spread = timedelta(seconds=TEMPLATE_INTERVAL_SECONDS) * (i / count)
        next_run_at = now + TEMPLATE_OFFSET + spread
    created = now - CREATED_SPAN + CREATED_SPAN * (i / count)
    return {
        "id": str(uuid.uuid4()),
        "merchant_id": DEFAULT_MERCHANT_ID,
        "name": f"bench-template-{i}",
        "task_type": TASK,
        "queue": "default",
        "priority": 0,
        "payload": {"n": i},
        "schedule_type": ScheduleType.INTERVAL,
        "cron_expression": None,
        "interval_seconds": TEMPLATE_INTERVAL_SECONDS,
        "timezone": "UTC",
        "start_at": next_run_at,
        "end_at": None,
        "active": True,
        "next_run_at": next_run_at,
        "last_scheduled_for": None,
        "misfire_policy": MisfirePolicy.RUN_ONCE.value,
        "overlap_policy": OverlapPolicy.ALLOW.value,
        "max_attempts": 4,
        "timeout_seconds": 300.0,
        "created_at": created,
        "updated_at": created,
    }


def _due_positions(count: int, due: int) -> set[int]:
    """``due`` row numbers spread evenly over ``count`` (due rows are not clustered)."""
    if due <= 0:
        return set()
    step = count / min(due, count)
    return {int(k * step) for k in range(min(due, count))}


RowMaker = Callable[[int, int, datetime, bool], dict[str, Any]]


async def _seed(
    db: Database, table: Table, make: RowMaker, count: int, due: int, now: datetime, what: str
) -> float:
    due_at = _due_positions(count, due)
    started = time.monotonic()
    last_report = started
    for first in range(0, count, SEED_BATCH):
        rows = [
            make(i, count, now, i in due_at) for i in range(first, min(count, first + SEED_BATCH))
        ]
        async with db.transaction() as conn:
            await conn.execute(table.insert(), rows)
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            progress(f"seeded {first + len(rows):,} of {count:,} {what}")
    return time.monotonic() - started


async def seed_jobs(db: Database, count: int, *, due: int, now: datetime) -> float:
    """Insert ``count`` scheduled one-time jobs, ``due`` of them already due; return seconds."""
    return await _seed(db, jobs, job_row, count, due, now, "jobs")


async def seed_templates(db: Database, count: int, *, due: int, now: datetime) -> float:
    """Insert ``count`` active templates, ``due`` of them already due; return seconds."""
    return await _seed(db, templates, template_row, count, due, now, "templates")


async def analyze(db: Database) -> None:
    """PostgreSQL: gather statistics now, as autovacuum soon would after a bulk load.

    SQLite is left alone: taskmill never runs ``ANALYZE`` there, so its planner works
    without statistics in production too.
    """
    if db.dialect.name == "sqlite":
        return
    async with db.transaction() as conn:
        await conn.execute(text("ANALYZE jobs"))
        await conn.execute(text("ANALYZE templates"))


# -- query plans ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    parameters: Any


class StatementLog:
    """Every statement the database sends while inside ``with`` (with its parameters),
    through any of its engines (SQLite's writer has one of its own)."""

    def __init__(self, db: Database) -> None:
        self.engines = db.sync_engines
        self.statements: list[Statement] = []

    def _record(
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        self.statements.append(Statement(statement, parameters))

    def __enter__(self) -> StatementLog:
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._record)

    def first_query(self, *fragments: str) -> Statement | None:
        """The first ``SELECT`` (or ``WITH ...``, as the statements ``store/direct.py``
        runs) whose text contains every fragment."""
        for stmt in self.statements:
            flat = " ".join(stmt.sql.split())
            if flat.upper().startswith(("SELECT", "WITH")) and all(f in flat for f in fragments):
                return stmt
        return None


async def explain(db: Database, stmt: Statement) -> list[str]:
    """The plan of a captured statement, with the parameters it ran with."""
    prefix = "EXPLAIN QUERY PLAN " if (db.dialect.name == "sqlite") else "EXPLAIN "
    async with db.read() as conn:
        result = await conn.exec_driver_sql(prefix + stmt.sql, stmt.parameters)
        rows = result.all()
    if db.dialect.name == "sqlite":
        # (id, parent, notused, detail): indent by depth as the sqlite3 shell does.
        depth: dict[int, int] = {0: -1}
        lines = []
        for row in rows:
            node, parent, _, detail = tuple[Any, ...](row)
            level = depth.get(parent, -1) + 1
            depth[node] = level
            lines.append("  " * level + str(detail))
        return lines
    return [str(row[0]) for row in rows]
