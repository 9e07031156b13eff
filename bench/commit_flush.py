"""What a PostgreSQL commit's wait for the WAL flush costs (ADR 0017).

    .venv/bin/python -m bench.commit_flush [--commits 500] [--reps 3]

On a scratch database, one connection updates one row ``--commits`` times in
autocommit with ``synchronous_commit`` on, then off, ``--reps`` times alternating, and
prints p50/p99/mean of one commit per variant: the time a claim saves by not waiting
for the flush. ``TASKMILL_BENCH_POSTGRES_URL`` picks the server. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.support import machine, percentile, scratch_database

ADMIN_URL = os.environ.get(
    "TASKMILL_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def commits(conn: asyncpg.Connection, mode: str, n: int) -> list[float]:
    await conn.execute(f"SET synchronous_commit = {mode}")
    took = []
    for _ in range(n):
        started = time.perf_counter()
        await conn.execute("UPDATE flush_probe SET n = n + 1 WHERE id = 1")
        took.append((time.perf_counter() - started) * 1000)
    return sorted(took)


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(f"{'synchronous_commit':<22} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        async with scratch_database("postgresql", Path(tmp), ADMIN_URL) as url:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                await conn.execute(
                    "CREATE TABLE flush_probe (id int PRIMARY KEY, n int);"
                    "INSERT INTO flush_probe VALUES (1, 0)"
                )
                for rep in range(args.reps):
                    for mode in ("on", "off"):
                        took = await commits(conn, mode, args.commits)
                        print(
                            f"{mode + f' #{rep + 1}':<22} {percentile(took, 50):8.3f} "
                            f"{percentile(took, 99):8.3f} {statistics.mean(took):8.3f}"
                        )
            finally:
                await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--commits", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
