"""Embedded SQLite figures: throughput and start latency of ``taskmill run``.

Run from the project root::

    .venv/bin/python -m bench.embedded_sqlite [--jobs 10000] [--latency-jobs 1000]

It starts ``taskmill run --app bench.noop_app:app`` as a subprocess on a SQLite file in a
temporary directory, produces jobs from this process through the library (a second
``Taskmill`` on the same file that only calls ``schedule``), and prints:

(a) throughput: the enqueue rate, and the time from the first enqueue until every no-op
    job is ``succeeded``;
(b) start latency: for one-time jobs spread over a few seconds, ``job_runs.started_at``
    minus ``run_at`` (p50/p95/p99/max);
(c) backlog drain: jobs inserted ahead and all due at the same instant, from that instant
    until every one succeeded: what the worker sustains when the producer is not the limit;
(d) trickle: jobs due now arriving one ``schedule()`` at a time, evenly spaced, from this
    process (not ``taskmill run``'s): ``job_runs.started_at`` minus ``created_at``, what
    a web app scheduling on the file ``taskmill run`` works from feels (issue 20).

It prints figures and never asserts on them. It always stops the subprocess it started
(SIGTERM, then SIGKILL after a grace period), even on error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from bench.noop_app import TASK, build_app
from taskmill import Taskmill
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import jobs as job_store

ROOT = Path(__file__).resolve().parents[1]
APP_SPEC = "bench.noop_app:app"
# Polling count_by_status costs the bench's CPU (a few ms per call on a large table):
# often where the time it is seen matters, rarely where timestamps come from the database.
POLL_SECONDS = 0.1
LATENCY_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0
LOG_TAIL_LINES = 20
# Environment variables that would change what the subprocess runs against.
FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "AMQP_URL")


class BenchError(Exception):
    """The bench could not finish a measurement (not a performance verdict)."""


@dataclass(frozen=True, slots=True)
class Options:
    jobs: int
    latency_jobs: int
    drain_jobs: int
    spread: float
    concurrency: int
    poll_interval: float
    timeout: float
    trickle_rate: float = 200.0
    trickle_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class Throughput:
    jobs: int
    enqueue_seconds: float
    done_when_enqueued: int
    end_to_end_seconds: float

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds

    @property
    def end_to_end_rate(self) -> float:
        return self.jobs / self.end_to_end_seconds


@dataclass(frozen=True, slots=True)
class Latency:
    jobs: int
    spread: float
    lead: float
    late_inserts: int
    retried: int
    millis: list[float]


@dataclass(frozen=True, slots=True)
class Drain:
    jobs: int
    lead: float
    late_inserts: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


@dataclass(frozen=True, slots=True)
class Trickle:
    jobs: int
    rate: float
    retried: int
    millis: list[float]


@dataclass(frozen=True, slots=True)
class Results:
    throughput: Throughput
    latency: Latency
    drain: Drain | None
    trickle: Trickle | None = None


@dataclass(frozen=True, slots=True)
class Shutdown:
    seconds: float
    returncode: int
    killed: bool


# -- the subprocess -------------------------------------------------------------------------


def worker_env(database_url: str, opts: Options, workdir: Path) -> dict[str, str]:
    """This process's environment without taskmill settings, plus the bench's own.

    The REST API is switched off: the bench measures the scheduler, and must neither take
    a fixed port nor leave an API key secret in the project directory.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TASKMILL_") and key not in FOREIGN_ENV
    }
    env.update(
        TASKMILL_DATABASE__URL=database_url,
        TASKMILL_WORKER__CONCURRENCY=str(opts.concurrency),
        TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS=str(opts.poll_interval),
        TASKMILL_API__SERVE_IN_RUN="false",
        TASKMILL_API__SECRET_KEY_FILE=str(workdir / "taskmill.secret"),
    )
    return env


def python_command(code: str, *args: str) -> list[str]:
    # `python -m taskmill.cli.main` would import the module and exit without running it.
    return [sys.executable, "-c", code, *args]


def effective_settings(env: dict[str, str]) -> dict[str, Any]:
    """The settings the subprocess sees (config/development.toml + the environment)."""
    code = "from bench.noop_app import app; print(app.settings.model_dump_json())"
    done = subprocess.run(
        python_command(code), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise BenchError(f"cannot load the bench app's settings:\n{done.stderr}")
    settings: dict[str, Any] = json.loads(done.stdout)
    return settings


def start_taskmill(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    code = "from taskmill.cli.main import main; main()"
    return subprocess.Popen(
        python_command(code, "run", "--app", APP_SPEC),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_taskmill(proc: subprocess.Popen[bytes]) -> Shutdown:
    """SIGTERM the subprocess and wait; SIGKILL it if it outlives the grace period."""
    started = time.monotonic()
    killed = False
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed = True
    return Shutdown(time.monotonic() - started, proc.returncode, killed)


def log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    | {line}" for line in lines)


# -- measuring ------------------------------------------------------------------------------


async def create_schema(database_url: str) -> None:
    """Migrate before the subprocess starts, so two processes never migrate at once."""
    app = build_app(database_url)
    try:
        await app.open()
    finally:
        await app.stop()


async def enqueue(app: Taskmill, run_at: datetime | None = None) -> Job:
    job = await app.schedule(TASK, None, run_at=run_at)
    if not isinstance(job, Job):
        raise BenchError(f"schedule returned {type(job).__name__}, expected a Job")
    return job


async def succeeded(app: Taskmill, proc: subprocess.Popen[bytes]) -> int:
    """How many jobs succeeded; raise if any failed or the subprocess died."""
    counts = await job_store.count_by_status(app.runtime.db, ALL_MERCHANTS)
    if counts[JobStatus.FAILED] or counts[JobStatus.CANCELLED]:
        raise BenchError(f"no-op jobs did not all succeed: {dict(counts)}")
    if proc.poll() is not None:
        raise BenchError(f"taskmill run exited early with code {proc.returncode}")
    return counts[JobStatus.SUCCEEDED]


async def wait_succeeded(
    app: Taskmill,
    proc: subprocess.Popen[bytes],
    target: int,
    timeout: float,
    poll: float = POLL_SECONDS,
) -> float:
    """Poll until ``target`` jobs in all succeeded; return the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        done = await succeeded(app, proc)
        now = time.monotonic()
        if done >= target:
            return now
        if now > deadline:
            raise BenchError(f"timed out after {timeout:g} s: {done} of {target} succeeded")
        await asyncio.sleep(poll)


async def measure_throughput(
    app: Taskmill, proc: subprocess.Popen[bytes], opts: Options
) -> Throughput:
    before = await succeeded(app, proc)
    started = time.monotonic()
    for _ in range(opts.jobs):
        await enqueue(app)
    enqueued = time.monotonic()
    done_when_enqueued = await succeeded(app, proc) - before
    progress(f"enqueued {opts.jobs} jobs in {enqueued - started:.1f} s; waiting for them")
    finished = await wait_succeeded(app, proc, before + opts.jobs, opts.timeout)
    return Throughput(opts.jobs, enqueued - started, done_when_enqueued, finished - started)


async def measure_latency(
    app: Taskmill, proc: subprocess.Popen[bytes], opts: Options, enqueue_rate: float
) -> Latency:
    """One-time jobs due over ``spread`` seconds, all inserted before the first is due."""
    n = opts.latency_jobs
    lead = 1.0 + 1.1 * n / enqueue_rate
    first_due = datetime.now(UTC) + timedelta(seconds=lead)
    step = timedelta(seconds=opts.spread / n)
    before = await succeeded(app, proc)
    jobs: list[Job] = []
    late = 0
    for i in range(n):
        job = await enqueue(app, first_due + step * i)
        late += datetime.now(UTC) > job.run_at
        jobs.append(job)
    progress(f"scheduled {n} jobs over {opts.spread:g} s, first due in {lead:.1f} s")
    await wait_succeeded(
        app, proc, before + n, lead + opts.spread + opts.timeout, LATENCY_POLL_SECONDS
    )
    millis: list[float] = []
    retried = 0
    for job in jobs:
        runs = await app.runs(job.id)
        retried += len(runs) > 1
        millis.append((runs[0].started_at - job.run_at).total_seconds() * 1000)
    return Latency(n, opts.spread, lead, late, retried, millis)


async def measure_drain(
    app: Taskmill, proc: subprocess.Popen[bytes], opts: Options, enqueue_rate: float
) -> Drain:
    """Jobs inserted ahead, all due at one instant: time from that instant to all done."""
    n = opts.drain_jobs
    lead = 1.0 + 1.1 * n / enqueue_rate
    due = datetime.now(UTC) + timedelta(seconds=lead)
    due_monotonic = time.monotonic() + lead
    before = await succeeded(app, proc)
    late = 0
    for _ in range(n):
        await enqueue(app, due)
        late += datetime.now(UTC) > due
    progress(f"scheduled {n} jobs due at once in {lead:.1f} s")
    finished = await wait_succeeded(app, proc, before + n, lead + opts.timeout)
    return Drain(n, lead, late, finished - due_monotonic)


async def measure_trickle(app: Taskmill, proc: subprocess.Popen[bytes], opts: Options) -> Trickle:
    """Jobs due now, one ``schedule()`` each, evenly spaced at ``trickle_rate``; each call
    starts on time whether or not the previous one returned (a slow commit must not slow
    the arrivals)."""
    before = await succeeded(app, proc)
    t0, sent = time.monotonic(), 0
    calls: list[asyncio.Task[Job]] = []
    n = max(1, round(opts.trickle_rate * opts.trickle_seconds))
    while sent < n:
        calls.append(asyncio.create_task(enqueue(app)))
        sent += 1
        await asyncio.sleep(max(0.0, t0 + sent / opts.trickle_rate - time.monotonic()))
    jobs = await asyncio.gather(*calls)
    progress(f"trickled {n} jobs in {time.monotonic() - t0:.1f} s")
    await wait_succeeded(app, proc, before + n, opts.timeout, LATENCY_POLL_SECONDS)
    millis: list[float] = []
    retried = 0
    for job in jobs:
        runs = await app.runs(job.id)
        retried += len(runs) > 1
        millis.append((runs[0].started_at - job.created_at).total_seconds() * 1000)
    return Trickle(n, opts.trickle_rate, retried, millis)


async def measure(database_url: str, proc: subprocess.Popen[bytes], opts: Options) -> Results:
    app = build_app(database_url)
    try:
        await app.open()
        await enqueue(app)  # warm-up: proves the subprocess runs jobs before timing starts
        await wait_succeeded(app, proc, 1, opts.timeout)
        progress("taskmill run is processing jobs; measuring throughput")
        throughput = await measure_throughput(app, proc, opts)
        progress("measuring start latency")
        latency = await measure_latency(app, proc, opts, throughput.enqueue_rate)
        drain = None
        if opts.drain_jobs:
            progress("measuring backlog drain")
            drain = await measure_drain(app, proc, opts, throughput.enqueue_rate)
        trickle = None
        if opts.trickle_seconds:
            progress("measuring the trickle")
            trickle = await measure_trickle(app, proc, opts)
        return Results(throughput, latency, drain, trickle)
    finally:
        await app.stop()


# -- reporting ------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def settings_lines(settings: dict[str, Any]) -> list[str]:
    worker, sched = settings["worker"], settings["scheduler"]
    return [
        f"  environment {settings['environment']}: config/{settings['environment']}.toml "
        "(if present) overridden by the TASKMILL_* variables the bench sets:",
        f"  worker.concurrency={worker['concurrency']} "
        f"scheduler.poll_interval_seconds={sched['poll_interval_seconds']} "
        f"scheduler.batch_size={sched['batch_size']} "
        f"worker.lease_seconds={worker['lease_seconds']}",
        f"  logging.level={settings['logging']['level']} (to a file), "
        f"tasks.max_retries={settings['tasks']['max_retries']}, "
        f"api.serve_in_run={str(settings['api']['serve_in_run']).lower()}",
    ]


def report(settings: dict[str, Any], results: Results, shutdown: Shutdown, log: Path) -> None:
    print(f"\ntaskmill run --app {APP_SPEC} on SQLite (python {sys.version.split()[0]})")
    print("\n".join(settings_lines(settings)))
    report_throughput(results.throughput)
    report_latency(results.latency)
    if results.drain is not None:
        report_drain(results.drain)
    if results.trickle is not None:
        report_trickle(results.trickle)
    how = "SIGKILL after the grace period" if shutdown.killed else "SIGTERM"
    print(f"\nshutdown: {how}, exit code {shutdown.returncode}, {shutdown.seconds:.2f} s")
    text = log.read_text(errors="replace")
    warnings, errors = text.count(" WARNING "), text.count(" ERROR ")
    print(f"taskmill run log: {warnings} warning and {errors} error lines")


def report_throughput(t: Throughput) -> None:
    print(f"\n(a) throughput, {t.jobs} no-op jobs")
    print(f"  {'phase':<44} {'seconds':>9} {'jobs/s':>9}")
    print(f"  {'enqueue (library, one schedule() per job)':<44} {t.enqueue_seconds:>9.2f}", end="")
    print(f" {t.enqueue_rate:>9.0f}")
    label = "end to end (first enqueue -> all succeeded)"
    print(f"  {label:<44} {t.end_to_end_seconds:>9.2f} {t.end_to_end_rate:>9.0f}")
    print(f"  already succeeded when enqueueing ended: {t.done_when_enqueued}")


def report_latency(latency: Latency) -> None:
    ms = sorted(latency.millis)
    print(f"\n(b) start latency (job_runs.started_at - run_at), {latency.jobs} jobs")
    arrival = latency.jobs / latency.spread
    print(
        f"  due over {latency.spread:g} s ({arrival:.0f} jobs/s), all inserted beforehand", end=""
    )
    print(f" (lead {latency.lead:.1f} s)")
    print(f"  {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'min':>8}  (ms)")
    values = [percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms[-1], ms[0]]
    print("  " + " ".join(f"{value:>8.1f}" for value in values))
    if latency.late_inserts:
        print(f"  note: {latency.late_inserts} jobs were inserted after their run_at")
    if latency.retried:
        print(f"  note: {latency.retried} jobs needed more than one attempt (first one counted)")


def report_drain(drain: Drain) -> None:
    print(f"\n(c) backlog drain, {drain.jobs} no-op jobs due at the same instant")
    print(f"  {'phase':<44} {'seconds':>9} {'jobs/s':>9}")
    label = "run_at -> all succeeded"
    print(f"  {label:<44} {drain.seconds:>9.2f} {drain.rate:>9.0f}")
    if drain.late_inserts:
        print(f"  note: {drain.late_inserts} jobs were inserted after their run_at")


def report_trickle(trickle: Trickle) -> None:
    ms = sorted(trickle.millis)
    print(
        f"\n(d) trickle: {trickle.jobs} jobs due now, one schedule() each at "
        f"{trickle.rate:g} jobs/s from another process (job_runs.started_at - created_at)"
    )
    print(f"  {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'min':>8}  (ms)")
    values = [percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms[-1], ms[0]]
    print("  " + " ".join(f"{value:>8.1f}" for value in values))
    if trickle.retried:
        print(f"  note: {trickle.retried} jobs needed more than one attempt (first one counted)")


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded_sqlite", description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs for (a)")
    parser.add_argument("--latency-jobs", type=int, default=1_000, help="one-time jobs for (b)")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds (b)'s jobs span")
    parser.add_argument(
        "--drain-jobs", type=int, default=None, help="jobs for (c) [default: --jobs; 0 skips]"
    )
    parser.add_argument("--concurrency", type=int, default=50, help="worker.concurrency")
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="scheduler.poll_interval_seconds"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up a phase after this many seconds"
    )
    parser.add_argument("--trickle-rate", type=float, default=200.0, help="(d)'s jobs/s")
    parser.add_argument(
        "--trickle-seconds", type=float, default=5.0, help="(d)'s duration [0 skips]"
    )
    ns = parser.parse_args(argv)
    drain_jobs = ns.jobs if ns.drain_jobs is None else ns.drain_jobs
    if ns.jobs < 1 or ns.latency_jobs < 1 or drain_jobs < 0 or ns.spread <= 0:
        parser.error("--jobs and --latency-jobs must be >= 1, --drain-jobs >= 0, --spread > 0")
    if not 0 < ns.trickle_rate <= 10_000 or not 0 <= ns.trickle_seconds <= 3600:
        parser.error("--trickle-rate must be in (0, 10000], --trickle-seconds in [0, 3600]")
    return Options(
        jobs=ns.jobs,
        latency_jobs=ns.latency_jobs,
        drain_jobs=drain_jobs,
        spread=ns.spread,
        concurrency=ns.concurrency,
        poll_interval=ns.poll_interval,
        timeout=ns.timeout,
        trickle_rate=ns.trickle_rate,
        trickle_seconds=ns.trickle_seconds,
    )


def run(opts: Options, workdir: Path) -> None:
    database_url = f"sqlite:///{workdir / 'bench.db'}"
    env = worker_env(database_url, opts, workdir)
    settings = effective_settings(env)
    asyncio.run(create_schema(database_url))
    log_path = workdir / "taskmill-run.log"
    with log_path.open("wb") as log:
        proc = start_taskmill(env, log)
        progress(f"started taskmill run (pid {proc.pid}), log in {log_path}")
        try:
            results = asyncio.run(measure(database_url, proc, opts))
        except BaseException:
            print(f"taskmill run log (last lines):\n{log_tail(log_path)}", file=sys.stderr)
            raise
        finally:
            shutdown = stop_taskmill(proc)  # always: this process started it
        report(settings, results, shutdown, log_path)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="taskmill-bench-") as tmp:
        try:
            run(opts, Path(tmp))
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
