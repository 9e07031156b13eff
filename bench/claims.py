"""What a rate limit costs a claim: claims of 10 jobs from a queued backlog, the plain
claim (PostgreSQL: one autocommitted statement) against the rate-limited one (the bucket
row locked, refilled and written back in the claim's transaction, ADR 0014), on a
scratch database of each backend. Prints figures, asserts nothing.

    .venv/bin/python -m bench.claims                  # 300 claims of 10 per case
    .venv/bin/python -m bench.claims --claims 100 --backend sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.support import Spread, machine, progress, revision, scratch_database
from taskmill.core.rate_limits import parse_rate_limit
from taskmill.store import migrate
from taskmill.store.claims import ClaimParams, enqueue_due
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_jobs

ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BATCH = 10


async def _seed(db: Database, task_type: str, count: int) -> None:
    now = datetime.now(UTC)
    for first in range(0, count, 5_000):
        n = min(5_000, count - first)
        news = [NewJob(task_type, now - timedelta(seconds=1)) for _ in range(n)]
        await create_jobs(db, news, actor="bench", now=now)
    await enqueue_due(db, now=now, limit=count, actor="bench")


async def _measure(url: str, claims: int) -> dict[str, Spread]:
    db = Database.from_url(url)
    store = store_for(db)
    try:
        await migrate.upgrade(db)
        figures = {}
        for case, task_type in (("plain", "free"), ("rate-limited", "limited")):
            await _seed(db, task_type, claims * BATCH)
            if case == "rate-limited":  # a limit far above what is claimed: never binds
                limit = parse_rate_limit("10000/s", burst=10_000)
                await store.declare_rate_limits(
                    {task_type: limit}, worker_id="b", now=datetime.now(UTC)
                )
            params = ClaimParams("bench", BATCH, 30.0, ["default"], [task_type])
            timings = []
            for _ in range(claims):
                started = time.perf_counter()
                if case == "plain":
                    got = await store.claim(params)
                else:
                    got = (await store.claim_rate_limited(params)).jobs
                timings.append((time.perf_counter() - started) * 1000)
                if len(got) != BATCH:
                    raise RuntimeError(f"{case}: claimed {len(got)} of {BATCH}")
            figures[case] = Spread.of(timings)
        return figures
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}\nrevision: {revision()}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            async with scratch_database(backend, Path(tmp), ADMIN_URL) as url:
                progress(f"{backend}: {args.claims} claims of {BATCH} per case")
                for case, spread in (await _measure(url, args.claims)).items():
                    print(
                        f"{backend:10} {case:12} claim of {BATCH}: p50 {spread.p50:.2f} ms, "
                        f"p99 {spread.p99:.2f} ms, max {spread.max:.2f} ms ({spread.count} claims)"
                    )
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    asyncio.run(main(parser.parse_args()))
