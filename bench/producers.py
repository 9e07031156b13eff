"""Many producers: how many durable jobs per second concurrent ``schedule()`` callers
reach, and what one call costs them (issue 20, item 5), beside Huey's enqueue.

Run from the project root::

    .venv/bin/python -m bench.producers [--seconds 10] [--variant pg --variant pg-redis]

Per taskmill variant (a scratch PostgreSQL database each; ``pg-redis`` also publishes
each job's hint to Redis, as a producer given the workers' broker does), three shapes,
no worker running (jobs only pile up, so nothing competes with the producers):

- 16 asyncio tasks in one process, each calling ``await app.schedule()`` in a loop: a
  call returns once its job is committed (calls in flight together share one insert);
- 4 processes of 4 such tasks each;
- one task calling ``schedule_many()`` with 1,000 jobs a call.

Huey (``RedisHuey``, from ``bench/.venv-peers``, made by ``python -m bench.compare``)
enqueues from 16 threads of one process, then 4 processes of 4 threads: an enqueue is
one Redis ``LPUSH``, not a durable database row. It prints jobs/s and the p50/p99 of one
call, and never asserts on them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.compare import PEERS_PYTHON
from bench.noop_app import TASK, build_app
from bench.production import delete_prefix
from bench.support import (
    POSTGRES_ADMIN_URL,
    Spread,
    create_postgres_database,
    drop_postgres_database,
    machine,
    progress,
    revision,
)
from taskmill.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
VARIANTS = ("pg", "pg-redis")
TASKS = 16
PROCESSES = 4
BULK = 1_000


@dataclass(frozen=True, slots=True)
class Shape:
    label: str
    jobs: int
    seconds: float
    calls_ms: list[float]

    def line(self) -> str:
        s = Spread.of(self.calls_ms)
        rate = self.jobs / self.seconds if self.seconds else 0.0
        return (
            f"  {self.label:<44} {rate:>9,.0f} {s.p50:>8.2f} {s.p99:>8.2f}   ({self.jobs:,} jobs)"
        )


def _settings(database_url: str, prefix: str, redis: bool) -> Any:
    broker = {"url": REDIS_URL, "prefix": prefix} if redis else {}
    return load_settings(None, None, database={"url": database_url}, broker=broker)


async def _producers(
    database_url: str, prefix: str, redis: bool, tasks: int, seconds: float, bulk: int
) -> tuple[int, list[float]]:
    """``tasks`` coroutines calling ``schedule()`` (or ``schedule_many(bulk)``) until
    ``seconds`` pass; the jobs made and each call's milliseconds."""
    app = build_app(settings=_settings(database_url, prefix, redis))
    await app.open()
    calls: list[float] = []
    made = 0
    deadline = time.monotonic() + seconds

    async def loop() -> None:
        nonlocal made
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if bulk:
                await app.schedule_many(TASK, [None] * bulk)
                made += bulk
            else:
                await app.schedule(TASK, None)
                made += 1
            calls.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(loop() for _ in range(tasks)))
    finally:
        await app.stop()
    return made, calls


def _process_main(args: tuple[str, str, bool, int, float], out: Any) -> None:
    database_url, prefix, redis, tasks, seconds = args
    out.put(asyncio.run(_producers(database_url, prefix, redis, tasks, seconds, 0)))


def taskmill_shapes(variant: str, seconds: float) -> list[Shape]:
    name = f"taskmill_bench_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(create_postgres_database(POSTGRES_ADMIN_URL, name))
    prefix = f"prod{uuid.uuid4().hex[:8]}"
    redis = variant == "pg-redis"
    shapes: list[Shape] = []
    try:
        asyncio.run(_producers(url, prefix, redis, 1, 1.0, 0))  # migrate, warm up
        started = time.monotonic()
        made, calls = asyncio.run(_producers(url, prefix, redis, TASKS, seconds, 0))
        shapes.append(Shape(f"{TASKS} tasks, schedule()", made, time.monotonic() - started, calls))
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        args = (url, prefix, redis, TASKS // PROCESSES, seconds)
        procs = [context.Process(target=_process_main, args=(args, out)) for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        results = [out.get() for _ in procs]
        for p in procs:
            p.join()
        shapes.append(
            Shape(
                f"{PROCESSES} processes x {TASKS // PROCESSES} tasks, schedule()",
                sum(r[0] for r in results),
                seconds,  # each process ran for `seconds` (start-up excluded)
                [ms for r in results for ms in r[1]],
            )
        )
        started = time.monotonic()
        made, calls = asyncio.run(_producers(url, prefix, redis, 1, seconds, BULK))
        shapes.append(
            Shape(f"1 task, schedule_many({BULK:,})", made, time.monotonic() - started, calls)
        )
    finally:
        asyncio.run(drop_postgres_database(POSTGRES_ADMIN_URL, name))
        if redis:
            delete_prefix(prefix)
    return shapes


HUEY_SCRIPT = ROOT / "bench" / "peers" / "huey_producers.py"


def huey_shapes(seconds: float) -> list[Shape]:
    if not PEERS_PYTHON.exists():
        progress(f"no {PEERS_PYTHON} (python -m bench.compare makes it): Huey skipped")
        return []
    shapes = []
    for threads, processes in ((TASKS, 1), (TASKS // PROCESSES, PROCESSES)):
        name = f"prod{uuid.uuid4().hex[:8]}"
        args = [str(PEERS_PYTHON), str(HUEY_SCRIPT), REDIS_URL, name]
        args += [str(threads), str(processes), str(seconds)]
        done = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        label = (
            f"{threads} threads, enqueue"
            if processes == 1
            else f"{processes} processes x {threads} threads, enqueue"
        )
        shapes.append(Shape(label, got["made"], seconds, got["calls"]))
    return shapes


def report(title: str, shapes: Sequence[Shape]) -> None:
    print(f"\n== {title}")
    print(f"  {'shape':<44} {'jobs/s':>9} {'p50 ms':>8} {'p99 ms':>8}   (per call)")
    for shape in shapes:
        print(shape.line())
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.producers", description=__doc__)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="repeatable")
    parser.add_argument("--seconds", type=float, default=10.0, help="per shape")
    parser.add_argument("--no-huey", action="store_true", help="taskmill only")
    ns = parser.parse_args(argv)
    print(f"commit {revision()}; machine at start: {machine()}")
    for variant in ns.variant or VARIANTS:
        progress(f"taskmill {variant}")
        report(
            f"taskmill {variant} (durable: a row committed per job)",
            taskmill_shapes(variant, ns.seconds),
        )
    if not ns.no_huey:
        progress("huey")
        report("Huey, RedisHuey (an LPUSH per job)", huey_shapes(ns.seconds))
    print(f"\nmachine at end: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
