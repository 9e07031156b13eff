"""Production-mode figures: PostgreSQL + Redis, and PostgreSQL alone, one process per
service (``taskmill queue-populator``, ``failure-watcher``, ``executor`` x N).

    .venv/bin/python -m bench.production [--jobs 20000] [--rate 500] [--seconds 10]

For each broker (redis, database) and each executor count (1, 2):

* throughput: ``--jobs`` no-op jobs inserted at once (``schedule_many``), seconds until all
  are ``succeeded``, and jobs/s;
* latency: ``--rate`` jobs/s for ``--seconds`` seconds into running services (a batch every
  100 ms), enqueue->start = ``job_runs.started_at - jobs.created_at``, p50/p99/max.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379. Each run
uses a scratch database and a Redis key prefix of its own, and removes both; it signals
only the processes it started. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from bench.noop_app import TASK, build_app
from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import migrate
from taskmill.store.database import Database
from taskmill.store.jobs import count_by_status
from taskmill.store.schema import job_runs, jobs

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TASKMILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _admin(sql: str) -> None:
    db = Database.from_url(ADMIN_URL, pool_size=1)
    try:
        async with db.engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await db.close()


async def _scratch_database() -> tuple[str, str]:
    name = f"taskmill_bench_{uuid.uuid4().hex[:10]}"
    await _admin(f"CREATE DATABASE {name}")
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    db = Database.from_url(url)
    await migrate.upgrade(db)
    await db.close()
    return name, url


@contextmanager
def services(url: str, broker: dict[str, str], executors: int, workdir: Path) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    for key in ("DATABASE_URL", "REDIS_URL", "AMQP_URL"):
        env.pop(key, None)
    env.update(
        TASKMILL_DATABASE__URL=url,
        TASKMILL_WORKER__CONCURRENCY="50",
        TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS="1",
        TASKMILL_DATABASE__MIGRATE_ON_START="false",
        TASKMILL_LOGGING__LEVEL="WARNING",
    )
    if broker:
        env.update(TASKMILL_BROKER__URL=broker["url"], TASKMILL_BROKER__PREFIX=broker["prefix"])
    names = ["queue-populator", "failure-watcher"] + ["executor"] * executors
    procs = []
    try:
        for i, name in enumerate(names):
            log = (workdir / f"{name}-{i}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "from taskmill.cli.main import main; main()",
                        name,
                        "--app",
                        "bench.noop_app:app",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        time.sleep(2.0)  # let every process connect and register
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if broker:
            delete_prefix(broker["prefix"])


def delete_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def _wait_succeeded(db: Database, n: int, timeout: float) -> float:
    start = time.monotonic()
    while (await count_by_status(db, ALL_MERCHANTS))[JobStatus.SUCCEEDED] < n:
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not all {n} jobs succeeded within {timeout}s")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def _producer(url: str, broker: dict[str, str]) -> Taskmill:
    """The bench's producer, on the services' broker: ``schedule()`` announces the jobs
    due at once itself."""
    overrides: dict[str, Any] = {"database": {"url": url}, "broker": broker}
    return build_app(settings=load_settings(**overrides))


async def throughput(url: str, broker: dict[str, str], count: int) -> float:
    producer = _producer(url, broker)
    try:
        for start in range(0, count, 1000):
            await producer.schedule_many(TASK, list(range(start, min(count, start + 1000))))
        db = (await producer.open()).db
        return count / await _wait_succeeded(db, count, 600)
    finally:
        await producer.stop()


async def latency(
    url: str, broker: dict[str, str], rate: int, seconds: float
) -> tuple[float, float, float]:
    producer = _producer(url, broker)
    batch = max(1, rate // 10)
    try:
        db = (await producer.open()).db
        before = (await count_by_status(db, ALL_MERCHANTS))[JobStatus.SUCCEEDED]
        since = datetime.now(UTC)
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < seconds:
            await producer.schedule_many(TASK, [None] * batch)
            sent += batch
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        await _wait_succeeded(db, before + sent, 300)
        async with db.read() as conn:
            rows = (
                await conn.execute(
                    select(jobs.c.created_at, job_runs.c.started_at)
                    .join(job_runs, job_runs.c.job_id == jobs.c.id)
                    .where(jobs.c.created_at >= since)
                )
            ).all()
        lags = sorted((r.started_at - r.created_at).total_seconds() * 1000 for r in rows)
        return _pct(lags, 50), _pct(lags, 99), lags[-1]
    finally:
        await producer.stop()


def _pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))]


async def run_config(broker: str, executors: int, args: argparse.Namespace) -> list[str]:
    name, url = await _scratch_database()
    hints = (
        {"url": REDIS_URL, "prefix": f"bench-{uuid.uuid4().hex[:8]}"} if broker == "redis" else {}
    )
    try:
        with tempfile.TemporaryDirectory() as tmp, services(url, hints, executors, Path(tmp)):
            rate = await throughput(url, hints, args.jobs)
            p50, p99, worst = await latency(url, hints, args.rate, args.seconds)
        return [
            f"{'PostgreSQL+Redis' if broker == 'redis' else 'PostgreSQL alone':18}",
            f"{executors:9}",
            f"{rate:8.0f}",
            f"{p50:8.1f}",
            f"{p99:8.1f}",
            f"{worst:8.1f}",
        ]
    finally:
        await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.jobs} no-op jobs; latency at {args.rate} jobs/s for {args.seconds} s; "
        "concurrency 50 per executor"
    )
    print(
        f"{'backend':18} {'executors':>9} {'jobs/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    for broker in ("redis", "database"):
        for executors in (1, 2):
            print(" ".join(await run_config(broker, executors, args)), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
