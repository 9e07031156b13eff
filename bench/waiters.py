"""What 1,000 callers waiting on results cost the database (issue 22), on PostgreSQL.

A producer ``Taskmill`` (no services) waits on N jobs with ``app.wait``; another
``Taskmill`` on the same database (the "other process": its own engine and LISTEN
connection) runs them. Printed: the producer's reads of finished jobs (``checks``: one
query per 1,000 waited ids each) while nothing finishes, and while the jobs run, per
second; and how long after the last job finished its waiter returned.

    .venv/bin/python -m bench.waiters --url postgresql://postgres@127.0.0.1:5432/bench_w

The database is created if missing and migrated; its jobs are deleted first.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from sqlalchemy import text

from taskmill import Job, TaskContext, Taskmill
from taskmill.config import load_settings


def make_app(url: str, **sections: Any) -> Taskmill:
    app = Taskmill(settings=load_settings(database={"url": url}, **sections))

    @app.task("noop", max_retries=0)
    async def noop(ctx: TaskContext, payload: Any) -> Any:
        return payload

    return app


async def _reset(url: str) -> None:
    base, _, name = url.rpartition("/")
    admin = make_app(f"{base}/postgres")
    db = admin.runtime.db
    async with db.engine.connect() as raw:
        conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
        exists = await conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        )
        if exists.first() is None:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await db.close()
    app = make_app(url)
    runtime = await app.open()
    async with runtime.db.transaction() as conn:
        for table in ("job_progress", "job_dependencies", "job_runs", "events", "jobs"):
            await conn.execute(text(f"DELETE FROM {table}"))
    await app.stop()


async def main(url: str, jobs: int, idle_seconds: float) -> None:
    await _reset(url)
    producer = make_app(url)
    worker = make_app(url, worker={"concurrency": 100})
    try:
        made: list[Job] = await producer.schedule_many("noop", list(range(jobs)), run_at=None)
        runtime = producer.runtime
        waiting = [asyncio.create_task(producer.wait(j.id, timeout=600)) for j in made]
        await asyncio.sleep(0.5)  # every waiter registered, the first checks done
        before, started = runtime.waiters.checks, time.monotonic()
        await asyncio.sleep(idle_seconds)
        idle = (runtime.waiters.checks - before) / (time.monotonic() - started)
        print(f"{runtime.waiters.waiting} jobs waited on, nothing finishing: {idle:.2f} reads/s")
        before, started = runtime.waiters.checks, time.monotonic()
        await worker.start()
        done = await asyncio.gather(*waiting)
        elapsed = time.monotonic() - started
        reads = runtime.waiters.checks - before
        last = max(j.finished_at for j in done if j.finished_at is not None)
        lag = (time.time() - last.timestamp()) if last else float("nan")
        print(
            f"{len(done)} jobs run by another Taskmill in {elapsed:.1f} s: {reads} reads "
            f"({reads / elapsed:.1f}/s); the last waiter returned {lag * 1000:.0f} ms after "
            "the last finish (upper bound: measured after gather)"
        )
    finally:
        await producer.stop()
        await worker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/bench_waiters")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.jobs, args.idle_seconds))
