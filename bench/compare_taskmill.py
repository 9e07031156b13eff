"""The ``bench.compare`` driver for taskmill (runs in the main virtualenv).

    .venv/bin/python -m bench.compare_taskmill VARIANT --out FILE [--jobs N ...]

VARIANT is ``sqlite`` (a file, ``taskmill run`` on it), ``pg`` (PostgreSQL, the database
as broker), ``pg-redis`` or ``pg-rabbitmq``. It creates a scratch database (and a broker
prefix) of its own, runs the scenarios of ``compare_common.run_rep`` once, writes the
figures to FILE as JSON, and removes what it created. ``--bulk N`` enqueues the
throughput phase with ``schedule_many()``, N jobs a call, instead of one ``schedule()``
per job (``bench.compare`` does not: the table compares one call per job). The worker is one
``taskmill run`` process (every service: populator, watcher, recurrence, executor) with
``worker.concurrency`` 50 (asyncio tasks) and the REST API off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.compare_app import TASK, build_app
from bench.compare_common import add_options, count, measure, options, write_json
from bench.support import create_postgres_database, drop_postgres_database
from taskmill import Taskmill
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.jobs import count_by_status

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
VARIANTS = ("sqlite", "pg", "pg-redis", "pg-rabbitmq")
CONCURRENCY = 50
FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "AMQP_URL")


class TaskmillAdapter:
    concurrency = f"1 `taskmill run` process, asyncio, worker.concurrency {CONCURRENCY}"

    def __init__(
        self, variant: str, database_url: str, prefix: str, workdir: Path, bulk: int = 0
    ) -> None:
        self.name = f"taskmill-{variant}" + (f"-bulk{bulk}" if bulk else "")
        self.variant = variant
        self.bulk = bulk
        self.database_url = database_url
        self.prefix = prefix
        self.workdir = workdir
        self.strict_done = True  # done = succeeded in the database, outcome committed
        self.loop = asyncio.new_event_loop()
        self.app: Taskmill = build_app(database_url, self.broker_settings())
        self.loop.run_until_complete(self.app.open())  # migrates before the worker starts

    def broker_settings(self) -> dict[str, str]:
        """The broker every process of this variant uses (producer and worker alike)."""
        url = {"pg-redis": REDIS_URL, "pg-rabbitmq": AMQP_URL}.get(self.variant)
        return {"url": url, "prefix": self.prefix} if url else {}

    def worker_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TASKMILL_") and k not in FOREIGN_ENV
        }
        env.update(
            TASKMILL_DATABASE__URL=self.database_url,
            TASKMILL_WORKER__CONCURRENCY=str(CONCURRENCY),
            TASKMILL_API__SERVE_IN_RUN="false",
            TASKMILL_API__SECRET_KEY_FILE=str(self.workdir / "taskmill.secret"),
            TASKMILL_DATABASE__MIGRATE_ON_START="false",
            TASKMILL_LOGGING__LEVEL="WARNING",
        )
        if self.variant == "sqlite":
            # No cross-process wake-up on SQLite: the populator finds jobs another
            # process created at its next poll (bench.embedded_sqlite uses 0.05 too).
            env["TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS"] = "0.05"
        broker = self.broker_settings()
        if broker:
            env.update(TASKMILL_BROKER__URL=broker["url"], TASKMILL_BROKER__PREFIX=broker["prefix"])
        return env

    def worker_command(self) -> list[str]:
        code = "from taskmill.cli.main import main; main()"
        if os.environ.get("BENCH_PING_EVERY_CHECKOUT"):  # A/B: the old pool_pre_ping cost
            code = f"import taskmill.store.engine as e; e.PING_IDLE_SECONDS = 0.0; {code}"
        command = [sys.executable, "-c", code, "run", "--app", "bench.compare_app:app"]
        profile = os.environ.get("BENCH_PYSPY")  # profile the worker: collapsed stacks
        if profile:
            spy = str(Path(sys.executable).parent / "py-spy")
            record = [spy, "record", "--format", "raw", "-r", "100", "-o", profile, "--"]
            # py-spy ignores the group's SIGTERM and writes its file when the worker exits
            return ["sh", "-c", 'trap "" TERM; exec "$0" "$@"', *record, *command]
        return command

    def enqueue(self, phase: str, dues: Sequence[float | None], in_flight: int) -> None:
        self.loop.run_until_complete(self._enqueue(phase, dues, in_flight))

    async def _enqueue(self, phase: str, dues: Sequence[float | None], in_flight: int) -> None:
        async def one(due: float | None) -> None:
            run_at = None if due is None else datetime.fromtimestamp(due, UTC)
            await self.app.schedule(TASK, [phase, time.time(), due], run_at=run_at)

        if phase == "throughput" and self.bulk:
            for first in range(0, len(dues), self.bulk):
                payloads = [[phase, time.time(), None] for _ in dues[first : first + self.bulk]]
                await self.app.schedule_many(TASK, payloads)
        elif in_flight <= 1:
            for due in dues:
                await one(due)
        else:
            for first in range(0, len(dues), in_flight):
                await asyncio.gather(*(one(d) for d in dues[first : first + in_flight]))

    def done(self, record_dir: Path, phase: str) -> int:
        if phase != "throughput":
            return count(record_dir, phase)
        counts = self.loop.run_until_complete(count_by_status(self.app.runtime.db, ALL_MERCHANTS))
        return counts[JobStatus.SUCCEEDED]

    def close(self) -> None:
        self.loop.run_until_complete(self.app.stop())
        self.loop.close()


async def _transactions(name: str) -> dict[str, int]:
    """Commits and rollbacks in the scratch database over the whole run (every process:
    producer, worker; a ping is a rollback), from pg_stat_database."""
    from sqlalchemy import text

    from taskmill.store.database import Database

    await asyncio.sleep(1.5)  # backends flush their statistics at most once a second
    db = Database.from_url(ADMIN_URL, pool_size=1)
    try:
        async with db.read() as conn:
            sql = "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = :n"
            row = (await conn.execute(text(sql), {"n": name})).one()
    finally:
        await db.close()
    return {"commit": int(row[0]), "rollback": int(row[1])}


async def _delete_broker_state(variant: str, prefix: str) -> None:
    if variant == "pg-redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    if variant == "pg-rabbitmq":
        import aio_pika

        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{prefix}.default")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_taskmill")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        help="throughput phase: schedule_many() with this many jobs per call (not one "
        "schedule() per job); for the bulk figure beside the table, not in it",
    )
    add_options(parser)
    ns = parser.parse_args(argv)
    if os.environ.get("BENCH_PING_EVERY_CHECKOUT"):
        import taskmill.store.engine

        taskmill.store.engine.PING_IDLE_SECONDS = 0.0
    opts = options(ns)
    prefix = f"cmp{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="taskmill-compare-") as tmp:
        workdir = Path(tmp)
        records = workdir / "records"
        records.mkdir()
        os.environ["BENCH_RECORD_DIR"] = str(records)
        name = ""
        if ns.variant == "sqlite":
            url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            name = f"taskmill_bench_{prefix}"
            url = asyncio.run(create_postgres_database(ADMIN_URL, name))
        adapter = None
        result: dict[str, Any] = {}
        try:
            adapter = TaskmillAdapter(ns.variant, url, prefix, workdir, ns.bulk)
            result = measure(adapter, opts, workdir, ns.out)
        finally:
            if adapter is not None:
                adapter.close()
            if name:
                if result:
                    result["pg_transactions"] = asyncio.run(_transactions(name))
                    write_json(ns.out, result)
                asyncio.run(drop_postgres_database(ADMIN_URL, name))
            asyncio.run(_delete_broker_state(ns.variant, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
