"""Retention under load: how much a large prune slows the jobs flowing beside it.

    .venv/bin/python -m bench.prune [--jobs 1000000] [--rate 500] [--seconds 60]
        [--batch-size 1000] [--pause 0.1]

On a scratch PostgreSQL database:

1. seeds ``--jobs`` jobs that succeeded ten days ago, each with its run and its four
   events (created, queued, started, succeeded), with ``COPY``, then ``VACUUM ANALYZE``
   (what autovacuum does after a bulk load; it is off on the bench's server);
2. starts one executor (``taskmill executor --app bench.redis_app:app``, Redis broker,
   concurrency 50), whose handler makes one Redis round trip;
3. **without prune**: schedules ``--rate`` jobs/s, one ``schedule()`` call per job, for
   ``--seconds`` seconds; start latency = ``job_runs.started_at - jobs.created_at``;
4. **during prune**: the same flow while ``taskmill prune`` (batches of ``--batch-size``
   jobs, ``--pause`` seconds apart: the ``[retention]`` defaults, as the pruner service
   runs them) deletes every seeded job; the flow runs until the prune ends.

Prints p50/p99/max of both phases and the prune's rows/s. Needs PostgreSQL at
127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379; removes its database and
Redis keys, signals only the processes it started, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, select

from bench.production import REDIS_URL, delete_prefix
from bench.redis_app import TASK, build_app
from bench.support import Spread, machine, progress, revision, scratch_database
from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.store import migrate
from taskmill.store.database import Database
from taskmill.store.schema import job_runs, jobs

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SEEDED_TASK = "seeded"
COPY_CHUNK = 50_000
AGE = timedelta(days=10)
EVENT_TYPES = (
    ("job.created", None, "scheduled"),
    ("job.queued", "scheduled", "queued"),
    ("job.started", "queued", "running"),
    ("job.succeeded", "running", "succeeded"),
)


# -- seeding ----------------------------------------------------------------------------


def _chunk(first: int, count: int, now: datetime) -> tuple[list[Any], list[Any], list[Any]]:
    job_rows, run_rows, event_rows = [], [], []
    for i in range(first, first + count):
        job_id = str(uuid.uuid4())
        due = now - AGE - timedelta(seconds=i / 100)  # a hundred a second, ten days ago
        done = due + timedelta(milliseconds=5)
        job_rows.append(
            (
                *(job_id, DEFAULT_MERCHANT_ID, SEEDED_TASK, "default", 0, "succeeded"),
                *("immediate", due, 1, 1, 300.0, "bench-worker"),
                *(due, due, done, due, done, "cancel"),
            )
        )
        run_rows.append((job_id, 1, "bench-worker", due, done, "succeeded", 0.005))
        for kind, old, new in EVENT_TYPES:
            data = json.dumps({"from": old, "to": new, "changes": {"status": new}})
            event_rows.append((done, DEFAULT_MERCHANT_ID, kind, "bench", job_id, data))
    return job_rows, run_rows, event_rows


JOB_COLUMNS = [
    "id",
    "merchant_id",
    "task_type",
    "queue",
    "priority",
    "status",
    "schedule_type",
    "run_at",
    "attempt",
    "max_attempts",
    "timeout_seconds",
    "worker_id",
    "queued_at",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
    "on_dependency_failure",
]
RUN_COLUMNS = [
    "job_id",
    "attempt",
    "worker_id",
    "started_at",
    "finished_at",
    "outcome",
    "duration_seconds",
]
EVENT_COLUMNS = ["occurred_at", "merchant_id", "type", "actor", "job_id", "data"]


async def seed(url: str, count: int) -> float:
    """``count`` succeeded jobs with a run and four events each, by ``COPY``; seconds."""
    started = time.monotonic()
    now = datetime.now(UTC)
    conn = await asyncpg.connect(url)
    try:
        for first in range(0, count, COPY_CHUNK):
            job_rows, run_rows, event_rows = _chunk(first, min(COPY_CHUNK, count - first), now)
            async with conn.transaction():
                await conn.copy_records_to_table("jobs", records=job_rows, columns=JOB_COLUMNS)
                await conn.copy_records_to_table("job_runs", records=run_rows, columns=RUN_COLUMNS)
                await conn.copy_records_to_table(
                    "events", records=event_rows, columns=EVENT_COLUMNS
                )
            progress(f"seeded {first + len(job_rows):,} of {count:,} jobs")
        for table in ("jobs", "job_runs", "events"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
    return time.monotonic() - started


# -- services ---------------------------------------------------------------------------


def _env(url: str, prefix: str, args: argparse.Namespace) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    for key in ("DATABASE_URL", "REDIS_URL", "AMQP_URL"):
        env.pop(key, None)
    env.update(
        TASKMILL_DATABASE__URL=url,
        TASKMILL_BROKER__URL=REDIS_URL,
        TASKMILL_BROKER__PREFIX=prefix,
        TASKMILL_WORKER__CONCURRENCY="50",
        TASKMILL_DATABASE__MIGRATE_ON_START="false",
        TASKMILL_LOGGING__LEVEL="WARNING",
        BENCH_REDIS_URL=REDIS_URL,
        BENCH_REDIS_KEY=f"{prefix}:touched",
        TASKMILL_RETENTION__BATCH_SIZE=str(args.batch_size),
        TASKMILL_RETENTION__PAUSE_SECONDS=str(args.pause),
    )
    return env


def _taskmill(*args: str) -> list[str]:
    return [sys.executable, "-c", "from taskmill.cli.main import main; main()", *args]


@contextmanager
def executor(env: dict[str, str], workdir: Path) -> Iterator[None]:
    with (workdir / "executor.log").open("ab") as log:
        proc = subprocess.Popen(
            _taskmill("executor", "--app", "bench.redis_app:app"),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(3.0)  # connected and registered
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the flow and its latency -----------------------------------------------------------


async def flow(url: str, prefix: str, rate: int, until: asyncio.Future[Any]) -> Spread:
    """``schedule()`` ``rate`` times a second, each call on its own, until ``until`` is
    done; then wait for every job to start and return their start latencies (ms)."""
    settings = load_settings(database={"url": url}, broker={"url": REDIS_URL, "prefix": prefix})
    producer = build_app(settings)
    db = (await producer.open()).db
    try:
        since = datetime.now(UTC)
        t0, sent, calls = time.monotonic(), 0, []
        while not until.done():
            calls.append(asyncio.create_task(producer.schedule(TASK, None)))
            sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        ids = [job.id for job in await asyncio.gather(*calls)]
        return await _latencies(db, since, ids)
    finally:
        await producer.stop()


async def _latencies(db: Database, since: datetime, ids: list[str]) -> Spread:
    # Wait on the status index (cheap), then read the latencies once: a join polled
    # every second would take the CPU the flow is measured with.
    unfinished = select(func.count()).where(jobs.c.status.in_(["scheduled", "queued", "running"]))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with db.read() as conn:
            if not (await conn.execute(unfinished)).scalar_one():
                break
        await asyncio.sleep(1.0)
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(jobs.c.created_at, job_runs.c.started_at)
                .join(job_runs, job_runs.c.job_id == jobs.c.id)
                .where(jobs.c.task_type == TASK, jobs.c.created_at >= since)
            )
        ).all()
    if len(rows) < len(ids):
        progress(f"only {len(rows)} of {len(ids)} jobs started within 300 s")
    return Spread.of([(r.started_at - r.created_at).total_seconds() * 1000 for r in rows])


async def prune(env: dict[str, str]) -> tuple[str, float]:
    """``taskmill prune`` in a subprocess: its summary line and the wall seconds."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *_taskmill("prune"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"taskmill prune exited {proc.returncode}: {out.decode()}")
    return out.decode().strip(), time.monotonic() - started


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}; revision {revision()}")
    prefix = f"bench-prune-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        async with scratch_database("postgresql", Path(tmp), ADMIN_URL) as url:
            db = Database.from_url(url)
            await migrate.upgrade(db)
            await db.close()
            seconds = await seed(url, args.jobs)
            print(
                f"seeded {args.jobs:,} succeeded jobs ten days old, with {args.jobs:,} runs "
                f"and {4 * args.jobs:,} events, in {seconds:.0f} s (COPY, VACUUM ANALYZE)"
            )
            env = _env(url, prefix, args)
            try:
                with executor(env, Path(tmp)):
                    quiet = await flow(
                        url, prefix, args.rate, asyncio.ensure_future(_sleep(args.seconds))
                    )
                    pruning = asyncio.ensure_future(prune(env))
                    busy = await flow(url, prefix, args.rate, pruning)
                    summary, prune_seconds = pruning.result()
            finally:
                delete_prefix(prefix)
    rows = 6 * args.jobs
    print(f"flow: {args.rate} jobs/s, one schedule() each; executor concurrency 50, Redis")
    print(f"{'phase':16} {'jobs':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, spread in (("without prune", quiet), ("during prune", busy)):
        print(f"{name:16} {spread.count:8} {spread.p50:8.1f} {spread.p99:8.1f} {spread.max:8.1f}")
    print(f"taskmill prune (batch_size {args.batch_size}, pause_seconds {args.pause}): {summary}")
    print(
        f"prune wall time {prune_seconds:.0f} s (start-up and count included): "
        f"{rows / prune_seconds:,.0f} rows/s, {args.jobs / prune_seconds:,.0f} jobs/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=1000, help="retention.batch_size")
    parser.add_argument("--pause", type=float, default=0.1, help="retention.pause_seconds")
    asyncio.run(main(parser.parse_args()))
