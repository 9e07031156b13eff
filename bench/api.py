"""REST API figures: ``POST /jobs`` and ``GET /jobs`` with a large table behind them.

Run from the project root::

    .venv/bin/python -m bench.api [--stored 1000000] [--concurrency 16] [--duration 10]

For SQLite and for PostgreSQL (a scratch database per backend, dropped at the end), it
seeds ``--stored`` jobs by bulk SQL, creates an admin key with ``taskmill api-keys create
--admin``, starts ``taskmill api --app bench.noop_app:app`` as a subprocess on a free port,
and drives it from this process with ``httpx.AsyncClient`` at a fixed concurrency for a
fixed duration per scenario:

- ``GET /jobs?limit=50`` (the first page),
- ``GET /jobs?limit=50&cursor=...`` at page 1000 (a deep keyset cursor),
- ``POST /jobs`` (an immediate no-op job; nothing runs it: only the API is started).

For each: 2xx and non-2xx counts, requests/s, p50/p99 latency. It prints figures and never
asserts on them. It always stops the subprocess it started. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import select

from bench.embedded_sqlite import (
    APP_SPEC,
    FOREIGN_ENV,
    ROOT,
    Shutdown,
    log_tail,
    python_command,
    stop_taskmill,
)
from bench.noop_app import TASK, build_app
from bench.support import (
    BACKENDS,
    POSTGRES_ADMIN_URL,
    BenchError,
    Spread,
    analyze,
    machine,
    progress,
    revision,
    scratch_database_sync,
    seed_jobs,
)
from taskmill.api.paging import encode_cursor
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.store.records import to_job
from taskmill.store.schema import jobs

CLI = "from taskmill.cli.main import main; main()"
READY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
PAGE_SIZE = 50

Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass(frozen=True, slots=True)
class Options:
    backends: tuple[str, ...]
    stored: int
    concurrency: int
    duration: float
    warmup: float
    deep_page: int
    postgres_url: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """The seeded database: how long seeding took, and the deep page's cursor."""

    seed_seconds: float
    deep_page: int
    deep_cursor: str | None
    deep_first_id: str | None


@dataclass(frozen=True, slots=True)
class Load:
    label: str
    seconds: float
    ok: int
    not_ok: Counter[int]
    errors: Counter[str]
    latency: Spread
    server_cpu: float | None  # CPU seconds the API process used per wall second
    client_cpu: float  # the same for this process (the load generator)
    note: str = ""

    @property
    def rate(self) -> float:
        return (self.ok + sum(self.not_ok.values())) / self.seconds


@dataclass(frozen=True, slots=True)
class BackendReport:
    backend: str
    prepared: Prepared
    loads: list[Load]
    shutdown: Shutdown
    warnings: int
    errors: int


# -- the database ---------------------------------------------------------------------------


async def prepare(database_url: str, opts: Options) -> Prepared:
    """Migrate, seed ``--stored`` jobs, and find the cursor that opens the deep page."""
    app = build_app(database_url)
    try:
        runtime = await app.open()
        progress(f"seeding {opts.stored:,} jobs")
        seconds = await seed_jobs(runtime.db, opts.stored, due=0, now=datetime.now(UTC))
        await analyze(runtime.db)
        page = min(opts.deep_page, opts.stored // PAGE_SIZE)
        if page < 2:
            return Prepared(seconds, page, None, None)
        # The last job of page - 1 gives the cursor; the next one opens the page.
        stmt = (
            select(jobs)
            .where(jobs.c.merchant_id == DEFAULT_MERCHANT_ID)
            .order_by(jobs.c.created_at, jobs.c.id)
            .offset((page - 1) * PAGE_SIZE - 1)
            .limit(2)
        )
        async with runtime.db.read() as conn:
            before, first = [to_job(row) for row in (await conn.execute(stmt)).all()]
        return Prepared(seconds, page, encode_cursor(before, "asc"), first.id)
    finally:
        await app.stop()


# -- the subprocess -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def api_env(database_url: str, port: int, workdir: Path) -> dict[str, str]:
    """This process's environment without taskmill settings, plus the bench's own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKMILL_") and key not in FOREIGN_ENV
    }
    env.update(
        TASKMILL_DATABASE__URL=database_url,
        TASKMILL_API__PORT=str(port),
        TASKMILL_API__SECRET_KEY_FILE=str(workdir / "taskmill.secret"),
    )
    return env


def create_admin_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        python_command(CLI, "api-keys", "create", "--admin", "--name", "bench"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("tm_"):
        raise BenchError(f"api-keys create failed ({done.returncode}):\n{done.stderr}")
    return lines[-1].strip()


def start_api(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        python_command(CLI, "api", "--app", APP_SPEC),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; ``None`` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load -----------------------------------------------------------------------------------


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BenchError(f"taskmill api exited early with code {proc.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"taskmill api not ready after {READY_TIMEOUT:g} s")
        await asyncio.sleep(0.2)


async def drive(
    client: httpx.AsyncClient,
    request: Request,
    label: str,
    concurrency: int,
    duration: float,
    pid: int,
) -> Load:
    """``concurrency`` loops sending ``request`` back to back for ``duration`` seconds."""
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                response = await request(client)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append((time.perf_counter() - sent) * 1000)
            codes[response.status_code] += 1

    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after, client_cpu = cpu_seconds(pid), (time.process_time() - client_before) / elapsed
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / elapsed
    ok = sum(n for code, n in codes.items() if 200 <= code < 300)
    not_ok = Counter({code: n for code, n in codes.items() if not 200 <= code < 300})
    return Load(label, elapsed, ok, not_ok, errors, Spread.of(latencies), cpu, client_cpu)


def scenarios(prepared: Prepared) -> list[tuple[str, Request, str]]:
    def first_page(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.get("/jobs", params={"limit": PAGE_SIZE})

    def create(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.post("/jobs", json={"task_type": TASK})

    found: list[tuple[str, Request, str]] = [(f"GET /jobs?limit={PAGE_SIZE}", first_page, "")]
    cursor = prepared.deep_cursor
    if cursor is not None:

        def deep_page(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
            return client.get(
                "/jobs", params={"limit": PAGE_SIZE, "cursor": cursor, "order": "asc"}
            )

        label = f"GET /jobs?limit={PAGE_SIZE}&cursor=(page {prepared.deep_page})"
        found.append((label, deep_page, "deep"))
    found.append(("POST /jobs (immediate no-op job)", create, ""))
    return found


async def check_deep_page(client: httpx.AsyncClient, request: Request, prepared: Prepared) -> str:
    """Whether the deep cursor opens the page the bench meant (a note for the report)."""
    response = await request(client)
    items = response.json().get("items", []) if response.status_code == 200 else []
    if items and items[0]["id"] == prepared.deep_first_id:
        return f"starts at job {(prepared.deep_page - 1) * PAGE_SIZE + 1:,}, as expected"
    return f"unexpected page: HTTP {response.status_code}, {len(items)} items"


async def measure(
    base_url: str, key: str, proc: subprocess.Popen[bytes], prepared: Prepared, opts: Options
) -> list[Load]:
    limits = httpx.Limits(
        max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"x-api-key": key},
        limits=limits,
        timeout=REQUEST_TIMEOUT,
    ) as client:
        await wait_ready(client, proc)
        loads = []
        for label, request, kind in scenarios(prepared):
            note = await check_deep_page(client, request, prepared) if kind == "deep" else ""
            await drive(client, request, label, opts.concurrency, opts.warmup, proc.pid)
            progress(f"{label}: {opts.duration:g} s at concurrency {opts.concurrency}")
            load = await drive(client, request, label, opts.concurrency, opts.duration, proc.pid)
            loads.append(replace(load, note=note))
            if proc.poll() is not None:
                raise BenchError(f"taskmill api exited with code {proc.returncode}")
        return loads


def run_backend(backend: str, opts: Options, workdir: Path) -> BackendReport:
    with scratch_database_sync(backend, workdir, opts.postgres_url) as url:
        prepared = asyncio.run(prepare(url, opts))
        port = free_port()
        env = api_env(url, port, workdir)
        key = create_admin_key(env)
        log_path = workdir / f"taskmill-api-{backend}.log"
        with log_path.open("wb") as log:
            proc = start_api(env, log)
            progress(f"started taskmill api (pid {proc.pid}) on port {port}, log in {log_path}")
            try:
                loads = asyncio.run(measure(f"http://127.0.0.1:{port}", key, proc, prepared, opts))
            except BaseException:
                print(f"taskmill api log (last lines):\n{log_tail(log_path)}", file=sys.stderr)
                raise
            finally:
                shutdown = stop_taskmill(proc)  # always: this process started it
        text = log_path.read_text(errors="replace")
        return BackendReport(
            backend, prepared, loads, shutdown, text.count(" WARNING "), text.count(" ERROR ")
        )


# -- reporting ------------------------------------------------------------------------------


def report(r: BackendReport, opts: Options) -> None:
    p = r.prepared
    print(f"\n== {r.backend}: taskmill api --app {APP_SPEC} (python {sys.version.split()[0]})")
    print(
        f"  {opts.stored:,} jobs stored (bulk insert {p.seed_seconds:.1f} s); "
        f"concurrency {opts.concurrency}, {opts.duration:g} s per scenario "
        f"after {opts.warmup:g} s of warm-up"
    )
    head = f"  {'scenario':<44} {'2xx':>7} {'non-2xx':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
    print(head + f" {'api cpu':>8} {'client cpu':>10}")
    for load in r.loads:
        cpu = "" if load.server_cpu is None else f"{load.server_cpu:.2f}"
        print(
            f"  {load.label:<44} {load.ok:>7} {sum(load.not_ok.values()):>8} {load.rate:>7.0f}"
            f" {load.latency.p50:>8.1f} {load.latency.p99:>8.1f} {cpu:>8}"
            f" {load.client_cpu:>10.2f}"
        )
    for load in r.loads:
        if load.not_ok:
            print(f"  {load.label}: non-2xx by status {dict(load.not_ok)}")
        if load.errors:
            print(f"  {load.label}: transport errors {dict(load.errors)}")
        if load.note:
            print(f"  {load.label}: {load.note}")
    how = "SIGKILL after the grace period" if r.shutdown.killed else "SIGTERM"
    print(f"  shutdown: {how}, exit code {r.shutdown.returncode}, {r.shutdown.seconds:.2f} s")
    print(f"  taskmill api log: {r.warnings} warning and {r.errors} error lines")


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    add = parser.add_argument
    add("--backend", action="append", choices=BACKENDS, help="repeatable [default: both]")
    add("--stored", type=int, default=1_000_000, help="jobs in the table before the load")
    add("--concurrency", type=int, default=16, help="requests in flight")
    add("--duration", type=float, default=10.0, help="seconds per scenario")
    add("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each")
    add("--deep-page", type=int, default=1000, help="page the deep-cursor scenario reads")
    add("--postgres-url", default=POSTGRES_ADMIN_URL, help="where to create scratch databases")
    ns = parser.parse_args(argv)
    if ns.stored < 0 or ns.concurrency < 1 or ns.duration <= 0 or ns.warmup < 0:
        parser.error("--stored >= 0, --concurrency >= 1, --duration > 0, --warmup >= 0")
    return Options(
        backends=tuple(ns.backend or BACKENDS),
        stored=ns.stored,
        concurrency=ns.concurrency,
        duration=ns.duration,
        warmup=ns.warmup,
        deep_page=ns.deep_page,
        postgres_url=ns.postgres_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    print(f"commit {revision()}; machine at start: {machine()}")
    with tempfile.TemporaryDirectory(prefix="taskmill-bench-") as tmp:
        for backend in opts.backends:
            try:
                result = run_backend(backend, opts, Path(tmp))
            except BenchError as exc:
                print(f"bench failed on {backend}: {exc}", file=sys.stderr)
                return 1
            report(result, opts)
    print(f"\nwhole run: {time.monotonic() - started:.0f} s; machine at end: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
