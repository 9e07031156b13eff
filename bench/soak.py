"""Soak: jobs arriving one at a time for minutes on end, and whether anything decays.

    .venv/bin/python -m bench.soak [--backend pg-redis|pg|rabbitmq|sqlite] [--minutes 30]
        [--rate JOBS_PER_S] [--vacuum auto|warn|off] [--concurrency 100]

1. starts one ``taskmill run --app bench.redis_app:app`` process (queue populator,
   failure watcher, pruner with the table maintenance, executor at ``--concurrency``;
   no API) on a scratch database, whose handler makes one Redis round trip;
2. measures its drain unless ``--rate`` is given: ``--drain-jobs`` jobs scheduled at
   once, jobs/s until all succeeded; the soak's rate is half of it;
3. schedules jobs one ``schedule()`` call each, evenly spaced at the rate, for
   ``--minutes``; every minute it prints the start latency (``job_runs.started_at -
   jobs.created_at``) p50/p99 of the jobs created that minute that have started, how
   many jobs are behind (``scheduled`` or ``queued``), the worker process's RSS, the dead
   row versions and size of each hot table (PostgreSQL) or the file size (SQLite), and
   Redis ``used_memory`` with the entries left in taskmill's streams (on ``rabbitmq``
   also the broker's RSS and the messages ready in the bench's queue);
4. waits for the backlog to drain, then prints the same table with every minute's
   latency read again (all its jobs started by then), each column's slope per minute
   (least squares) and the last minute's p99 over the first's.

``--retention 5m`` keeps succeeded jobs five minutes (``retention.succeeded_after_days``):
the pruner then deletes as fast as jobs arrive, the steady state of a deployment that
has run longer than its retention, so table sizes must plateau.
``--vacuum`` is the worker's ``maintenance.vacuum`` (``--maintenance-interval`` and
``--dead-tuples-threshold`` its other settings); the server's own autovacuum is whatever
it is (printed). ``--schema-revision 0010`` runs on the schema before migration 0011 (the
old claim index, no per-table settings), for a before/after. Needs PostgreSQL at
127.0.0.1:5432 (``TASKMILL_BENCH_POSTGRES_URL``), Redis at 127.0.0.1:6379 and, for
``rabbitmq``, RabbitMQ at 127.0.0.1:5672. Removes its
database and broker state, signals only the process it started, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import func, select, text

from bench.compare_common import start_group, stop_group, tree_rss_bytes
from bench.redis_app import TASK, build_app
from bench.support import machine, percentile, progress, revision, scratch_database
from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.table_health import HOT_TABLES
from taskmill.store import migrate
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.schema import job_runs, jobs

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TASKMILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("TASKMILL_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BACKENDS = ("pg-redis", "pg", "rabbitmq", "sqlite")
SHOWN_TABLES = ("jobs", "job_runs", "events", "workers")
MB = 1024 * 1024


@dataclass
class Minute:
    """One minute of the soak: its arrivals' latencies and what was sampled at its end."""

    index: int
    sent: int = 0
    started: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    behind: int = 0
    rss_mb: float = 0.0
    tables: dict[str, tuple[int, float]] = field(default_factory=dict)  # dead, MB
    file_mb: float = 0.0
    redis_mb: float = 0.0
    stream_entries: int = 0
    rabbit_mb: float = 0.0
    rabbit_messages: int = 0


# -- the process under test -------------------------------------------------------------


def broker_settings(backend: str, prefix: str) -> dict[str, str]:
    url = {"pg-redis": REDIS_URL, "rabbitmq": AMQP_URL}.get(backend)
    return {"url": url, "prefix": prefix} if url else {}


def worker_env(url: str, backend: str, prefix: str, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    for key in ("DATABASE_URL", "REDIS_URL", "AMQP_URL"):
        env.pop(key, None)
    env.update(
        TASKMILL_DATABASE__URL=url,
        TASKMILL_DATABASE__MIGRATE_ON_START="false",
        TASKMILL_WORKER__CONCURRENCY=str(args.concurrency),
        TASKMILL_API__SERVE_IN_RUN="false",
        # INFO: the pruner's batches and the vacuums' ends are dated in the kept log
        # (nothing logs per job at INFO).
        TASKMILL_LOGGING__LEVEL="INFO",
        TASKMILL_MAINTENANCE__VACUUM=args.vacuum,
        TASKMILL_MAINTENANCE__INTERVAL_SECONDS=str(args.maintenance_interval),
        TASKMILL_MAINTENANCE__DEAD_TUPLES_THRESHOLD=str(args.dead_tuples_threshold),
        BENCH_REDIS_URL=REDIS_URL,
        BENCH_REDIS_KEY=f"{prefix}:touched",
    )
    if args.retention:
        env.update(
            TASKMILL_RETENTION__SUCCEEDED_AFTER_DAYS=args.retention,
            TASKMILL_RETENTION__INTERVAL_SECONDS="30",
        )
    broker = broker_settings(backend, prefix)
    if broker:
        env.update(TASKMILL_BROKER__URL=broker["url"], TASKMILL_BROKER__PREFIX=broker["prefix"])
    for setting in args.worker_setting:
        key, _, value = setting.partition("=")
        env[key] = value
    return env


def producer(url: str, backend: str, prefix: str) -> Taskmill:
    overrides: dict[str, Any] = {"database": {"url": url}}
    broker = broker_settings(backend, prefix)
    if broker:
        overrides["broker"] = broker
    return build_app(load_settings(**overrides))


# -- what is sampled --------------------------------------------------------------------


async def unfinished(db: Database) -> tuple[int, int]:
    """Jobs behind (scheduled or queued) and running."""
    stmt = select(jobs.c.status, func.count()).group_by(jobs.c.status)
    stmt = stmt.where(jobs.c.status.in_(["scheduled", "queued", "running"]))
    async with db.read() as conn:
        counts: dict[str, int] = {row[0]: row[1] for row in (await conn.execute(stmt)).all()}
    return counts.get("scheduled", 0) + counts.get("queued", 0), counts.get("running", 0)


async def cohort(db: Database, since: datetime, until: datetime) -> tuple[list[float], int]:
    """Start latencies (ms, sorted) of the jobs created in ``[since, until)`` that have
    started (first attempt), and how many were created."""
    created = jobs.c.created_at.between(since, until - timedelta(microseconds=1))
    # Subtracted here: SQLite has no timestamp arithmetic.
    lag = select(job_runs.c.started_at, jobs.c.created_at).join(
        job_runs, (job_runs.c.job_id == jobs.c.id) & (job_runs.c.attempt == 1)
    )
    async with db.read() as conn:
        rows = (await conn.execute(lag.where(created, jobs.c.task_type == TASK))).all()
        lags = [started - created for started, created in rows]
        total = (
            await conn.execute(select(func.count()).where(created, jobs.c.task_type == TASK))
        ).scalar_one()
    return sorted(d.total_seconds() * 1000 for d in lags), int(total)


async def redis_figures(client: aioredis.Redis, prefix: str) -> tuple[float, int]:
    """Redis ``used_memory`` (MB, the whole server: shared) and the entries left in the
    bench's streams."""
    used = (await client.info("memory"))["used_memory"] / MB
    entries = 0
    async for key in client.scan_iter(match=f"{prefix}:*", _type="stream"):
        entries += await client.xlen(key)
    return used, entries


def beam_rss_mb() -> float:
    """RSS of the RabbitMQ server (``beam.smp``: the whole broker, shared), 0 if not found."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text_ = status.read_text()
        except OSError:
            continue
        if text_.startswith("Name:\tbeam.smp"):
            for line in text_.splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return 0.0


async def rabbit_messages(prefix: str) -> int:
    """Messages ready in the bench's RabbitMQ queue (unacknowledged ones not counted)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.default", passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0)


def sqlite_mb(url: str) -> float:
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists()) / MB


async def sample(
    minute: Minute,
    db: Database,
    url: str,
    pid: int,
    client: aioredis.Redis,
    prefix: str,
    backend: str,
) -> None:
    minute.behind, _ = await unfinished(db)
    minute.rss_mb = tree_rss_bytes(pid) / MB
    stats = await store_for(db).table_stats(HOT_TABLES)
    if stats is None:
        minute.file_mb = sqlite_mb(url)
    else:
        minute.tables = {s.table: (s.dead_rows, s.size_bytes / MB) for s in stats}
    minute.redis_mb, minute.stream_entries = await redis_figures(client, prefix)
    if backend == "rabbitmq":
        minute.rabbit_mb, minute.rabbit_messages = beam_rss_mb(), await rabbit_messages(prefix)


async def latencies(minute: Minute, db: Database, since: datetime) -> None:
    start = since + timedelta(minutes=minute.index)
    lags, total = await cohort(db, start, start + timedelta(minutes=1))
    if total < minute.sent:  # pruned since (``--retention``): the first reading stands
        return
    minute.sent, minute.started = total, len(lags)
    if lags:
        minute.p50_ms, minute.p99_ms = percentile(lags, 50), percentile(lags, 99)


# -- printing ---------------------------------------------------------------------------


def header(postgres: bool) -> str:
    tables = (
        " ".join(f"{t + ' dead/MB':>18}" for t in SHOWN_TABLES) if postgres else f"{'file MB':>8}"
    )
    return (
        f"{'min':>3} {'jobs':>6} {'started':>7} {'p50 ms':>8} {'p99 ms':>9} {'behind':>7} "
        f"{'RSS MB':>7} {tables} {'redis MB':>8} {'stream':>7} {'rabbit MB':>9} {'queued':>6}"
    )


def row(m: Minute, postgres: bool) -> str:
    if postgres:
        tables = " ".join(
            f"{m.tables.get(t, (0, 0.0))[0]:>10,}/{m.tables.get(t, (0, 0.0))[1]:<7.1f}"
            for t in SHOWN_TABLES
        )
    else:
        tables = f"{m.file_mb:8.1f}"
    return (
        f"{m.index + 1:3} {m.sent:6} {m.started:7} {m.p50_ms:8.1f} {m.p99_ms:9.1f} "
        f"{m.behind:7} {m.rss_mb:7.1f} {tables} {m.redis_mb:8.1f} {m.stream_entries:7} "
        f"{m.rabbit_mb:9.1f} {m.rabbit_messages:6}"
    )


def slope(values: Sequence[float]) -> float:
    """Least-squares change per minute (NaN with fewer than two finite points)."""
    points = [(i, v) for i, v in enumerate(values) if v == v]  # NaN != NaN
    if len(points) < 2:
        return float("nan")
    xs, ys = zip(*points, strict=True)
    return statistics.linear_regression(xs, ys).slope


def summary(minutes: list[Minute], postgres: bool) -> list[str]:
    lines = [
        f"slope per minute: p50 {slope([m.p50_ms for m in minutes]):+.2f} ms, "
        f"p99 {slope([m.p99_ms for m in minutes]):+.2f} ms, "
        f"behind {slope([m.behind for m in minutes]):+.1f} jobs, "
        f"RSS {slope([m.rss_mb for m in minutes]):+.2f} MB, "
        f"redis {slope([m.redis_mb for m in minutes]):+.2f} MB, "
        f"stream entries {slope([m.stream_entries for m in minutes]):+.1f}, "
        f"rabbit {slope([m.rabbit_mb for m in minutes]):+.2f} MB, "
        f"rabbit queue {slope([m.rabbit_messages for m in minutes]):+.1f} messages"
    ]
    if postgres:
        for table in HOT_TABLES:
            dead = slope([m.tables.get(table, (0, 0.0))[0] for m in minutes])
            size = slope([m.tables.get(table, (0, 0.0))[1] for m in minutes])
            lines.append(f"  {table:14} dead {dead:+10,.0f} rows/min, size {size:+7.2f} MB/min")
    else:
        lines.append(f"  file {slope([m.file_mb for m in minutes]):+.2f} MB/min")
    first, last = minutes[0].p99_ms, minutes[-1].p99_ms
    lines.append(
        f"p99 last minute / first minute: {last:.1f} / {first:.1f} ms = {last / first:.2f}x"
        if first == first and last == last and first > 0
        else "p99 last/first: n/a"
    )
    return lines


# -- the run ----------------------------------------------------------------------------


async def wait_idle(db: Database, timeout: float) -> float:
    """Seconds until nothing is behind or running (``timeout``: gave up)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        behind, running = await unfinished(db)
        if behind == running == 0:
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - started


async def measure_drain(app: Taskmill, db: Database, count: int) -> float:
    t0 = time.monotonic()
    for start in range(0, count, 1000):
        await app.schedule_many(TASK, [None] * min(1000, count - start))
    await wait_idle(db, 600)
    return count / (time.monotonic() - t0)


async def produce(app: Taskmill, rate: float, seconds: float) -> int:
    """One ``schedule()`` per job, evenly spaced, not waiting for each (a slow insert
    must not slow the arrivals: the producer's insert batcher groups the waiting ones)."""
    t0, sent = time.monotonic(), 0
    pending: set[asyncio.Task[Any]] = set()
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * rate) + 1
        while sent < due:
            task = asyncio.create_task(app.schedule(TASK, None))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
    if pending:
        await asyncio.gather(*pending)
    return sent


def maintenance_lines(log: Path) -> str:
    """What the worker's table maintenance logged: the vacuums it ran, by table."""
    logged = log.read_text(errors="replace").splitlines()
    lines = [line for line in logged if "VACUUM" in line]
    by_table: dict[str, int] = {}
    for line in lines:
        if "running VACUUM" in line:
            table = line.split(": ")[-2].split()[-1] if ": " in line else "?"
            by_table[table] = by_table.get(table, 0) + 1
    ran = ", ".join(f"{t} {n}x" for t, n in sorted(by_table.items())) or "none"
    pruned = sum(1 for line in logged if " pruned " in line)
    return (
        f"table maintenance: VACUUM runs {ran}; {len(lines)} log lines naming VACUUM; "
        f"{pruned} pruner batches"
    )


async def server_autovacuum(db: Database) -> str:
    if db.dialect.name != "postgresql":
        return "n/a (SQLite)"
    async with db.read() as conn:
        return str((await conn.execute(text("SHOW autovacuum"))).scalar_one())


async def hot_updates(db: Database) -> list[str]:
    if db.dialect.name != "postgresql":
        return []
    query = text(
        "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
        " WHERE relname = ANY(:t) ORDER BY relname"
    )
    async with db.read() as conn:
        rows = (await conn.execute(query, {"t": list(HOT_TABLES)})).all()
    return [
        f"  {r[0]:14} updates {r[1]:>10,}, HOT {r[2]:>10,} ({r[2] / max(1, r[1]):.0%})"
        for r in rows
    ]


async def soak(args: argparse.Namespace, url: str, workdir: Path) -> None:
    backend, prefix = args.backend, f"bench-soak-{uuid.uuid4().hex[:8]}"
    db = Database.from_url(url)
    await migrate.upgrade(db, args.schema_revision)
    client = aioredis.Redis.from_url(REDIS_URL)
    postgres = db.dialect.name == "postgresql"
    proc = start_group(
        [sys.executable, "-c", "from taskmill.cli.main import main; main()", "run",
         "--app", "bench.redis_app:app"],
        worker_env(url, backend, prefix, args), ROOT, workdir / "worker.log",
    )  # fmt: skip
    app = producer(url, backend, prefix)
    try:
        await app.open()
        await asyncio.sleep(3.0)  # the worker connected and registered
        print(
            f"backend {backend}; server autovacuum {await server_autovacuum(db)}; "
            f"maintenance.vacuum {args.vacuum} (every {args.maintenance_interval:g} s, "
            f"threshold {args.dead_tuples_threshold:,}); concurrency {args.concurrency}; "
            f"schema {args.schema_revision}; retention of succeeded jobs "
            f"{args.retention or '7d (default)'}"
        )
        rate = args.rate
        if rate is None:
            drain = await measure_drain(app, db, args.drain_jobs)
            rate = drain / 2
            print(f"drain: {args.drain_jobs:,} jobs at once ran at {drain:,.0f} jobs/s")
        print(f"soak: {rate:,.0f} jobs/s, one schedule() each, for {args.minutes:g} minutes")
        print(header(postgres), flush=True)
        since = datetime.now(UTC)
        minutes: list[Minute] = []
        producing = asyncio.ensure_future(produce(app, rate, args.minutes * 60))
        for index in range(int(args.minutes)):
            await asyncio.sleep(
                max(0.0, 60 * (index + 1) - (datetime.now(UTC) - since).total_seconds())
            )
            minute = Minute(index)
            await sample(minute, db, url, proc.pid, client, prefix, backend)
            await latencies(minute, db, since)
            minutes.append(minute)
            print(row(minute, postgres), flush=True)
        sent = await producing
        idle = await wait_idle(db, args.drain_wait)
        behind, running = await unfinished(db)
        print(
            f"producer sent {sent:,} jobs; {idle:.0f} s after it stopped: {behind:,} behind, "
            f"{running:,} running"
        )
        for minute in minutes:  # every job of each minute has started by now (or never)
            await latencies(minute, db, since)
        print("each minute's latency again, after the drain:")
        print(header(postgres))
        for minute in minutes:
            print(row(minute, postgres))
        print("\n".join(summary(minutes, postgres)))
        if postgres:
            print("updates and HOT updates over the run (pg_stat_user_tables):")
            print("\n".join(await hot_updates(db)))
        print(maintenance_lines(workdir / "worker.log"))
    finally:
        await app.stop()
        stopped = stop_group(proc)
        if stopped["killed"]:
            progress("the worker did not stop within 20 s: killed")
        kept = Path(args.keep_log_dir) / f"soak-{backend}-{prefix}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(workdir / "worker.log", kept)
            print(f"worker log kept in {kept}")
        await _delete_broker_state(client, backend, prefix)
        await client.aclose()
        await db.close()


async def _delete_broker_state(client: aioredis.Redis, backend: str, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    if backend == "rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{prefix}.default")


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}; revision {revision()}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        kind = "sqlite" if args.backend == "sqlite" else "postgresql"
        async with scratch_database(kind, Path(tmp), ADMIN_URL) as url:
            await soak(args, url, Path(tmp))
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=BACKENDS, default="pg-redis")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=None, help="jobs/s (default: half the drain)")
    parser.add_argument("--drain-jobs", type=int, default=10_000)
    parser.add_argument("--drain-wait", type=float, default=300.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--vacuum", choices=("auto", "warn", "off"), default="auto")
    parser.add_argument("--maintenance-interval", type=float, default=60.0)
    parser.add_argument("--dead-tuples-threshold", type=int, default=10_000)
    parser.add_argument(
        "--keep-log-dir",
        default=tempfile.gettempdir(),
        help="where the worker's log is copied at the end (the scratch directory goes)",
    )
    parser.add_argument(
        "--retention",
        default=None,
        help="retention.succeeded_after_days as an age (e.g. 5m): the pruner deletes as "
        "the jobs arrive, the steady state of a long-running deployment (default: "
        "taskmill's 7 days, nothing pruned within a soak)",
    )
    parser.add_argument(
        "--worker-setting",
        action="append",
        default=[],
        metavar="TASKMILL_KEY=VALUE",
        help="one more setting of the worker's environment (repeatable), e.g. "
        "TASKMILL_RETENTION__BATCH_SIZE=200",
    )
    parser.add_argument(
        "--schema-revision",
        default="head",
        help="migrate the scratch database only this far (0010: before migration 0011)",
    )
    asyncio.run(main(parser.parse_args()))
