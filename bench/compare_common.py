"""What ``bench.compare`` shares between taskmill and its peers (standard library only:
the peers' worker processes import it from their own virtualenv).

* :func:`record`: what every system's no-op handler does, whatever the system: append
  ``enqueued due started`` (``time.time()`` seconds, fixed width) to
  ``$BENCH_RECORD_DIR/<phase>.txt``. One ``O_APPEND`` file shared by every process and
  thread (one ``write`` per line, so lines never interleave), so counting finished
  handlers is a ``stat``.
* :class:`Adapter` and :func:`run_rep`: the three scenarios, run identically for every
  system by its driver (``bench.compare_taskmill`` or ``bench/peers/driver.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
FIELD = "%17.6f"
LINE = f"{FIELD} {FIELD} {FIELD}\n"
LINE_BYTES = 17 * 3 + 3
PHASES = ("throughput", "latency", "delayed")
_fds: dict[tuple[int, str], int] = {}
_fd_lock = threading.Lock()


def record(phase: str, enqueued: float, due: float | None) -> None:
    """The handler's whole work: note when it started (see the module docstring)."""
    started = time.time()
    key = (os.getpid(), phase)
    fd = _fds.get(key)
    if fd is None:
        with _fd_lock:
            fd = _fds.get(key)
            if fd is None:
                path = Path(os.environ["BENCH_RECORD_DIR"]) / f"{phase}.txt"
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                _fds[key] = fd
    os.write(fd, (LINE % (enqueued, due or 0.0, started)).encode())


def count(record_dir: Path, phase: str) -> int:
    try:
        return (record_dir / f"{phase}.txt").stat().st_size // LINE_BYTES
    except FileNotFoundError:
        return 0


def read(record_dir: Path, phase: str) -> list[tuple[float, float, float]]:
    path = record_dir / f"{phase}.txt"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        enq, due, started = (float(x) for x in line.split())
        rows.append((enq, due, started))
    return rows


# -- figures --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(millis: Sequence[float]) -> dict[str, float]:
    ordered = sorted(millis)
    return {
        "count": float(len(ordered)),
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else math.nan,
        "min": ordered[0] if ordered else math.nan,
    }


def quantiles(millis: Sequence[float], points: int = 201) -> list[float]:
    """``points`` evenly spaced quantiles (0 to 100 %), enough to draw a distribution."""
    ordered = sorted(millis)
    if not ordered:
        return []
    last = len(ordered) - 1
    return [ordered[round(i * last / (points - 1))] for i in range(points)]


# -- processes ------------------------------------------------------------------------------


def start_group(
    command: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group (its children join it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> dict[str, Any]:
    """SIGTERM the group ``proc`` leads, SIGKILL it after ``grace`` seconds."""
    started = time.monotonic()
    killed = False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        killed = True
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group go too
        os.killpg(proc.pid, signal.SIGKILL if killed else signal.SIGTERM)
    if killed:
        proc.wait(timeout=10)
    return {"seconds": time.monotonic() - started, "returncode": proc.returncode, "killed": killed}


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return found


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in _tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (``/proc/<pid>/stat``)."""
    ticks = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples the RSS of a process and all its descendants every ``interval`` s; keeps
    the peak (the sum over the tree: a prefork or forking worker counts whole)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- the scenarios --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    jobs: int = 20_000  # throughput
    rate: int = 500  # latency: jobs/s ...
    seconds: float = 10.0  # ... for this long
    delayed: int = 2_000  # delayed jobs ...
    spread: float = 10.0  # ... due over this many seconds
    timeout: float = 300.0  # per wait


class Adapter(Protocol):
    """One system as the scenarios see it."""

    name: str
    concurrency: str  # how its worker runs jobs, for the report
    strict_done: bool  # done() counts committed outcomes, not handler starts

    def worker_command(self) -> list[str]: ...

    def worker_env(self) -> dict[str, str]: ...

    def enqueue(self, phase: str, dues: Sequence[float | None], in_flight: int) -> None:
        """Enqueue one job per entry (``None``: run now), one call each; the job's
        payload is ``(phase, time.time() just before its call, due)``. Async clients
        may keep up to ``in_flight`` calls going at once; sync ones go one by one."""
        ...

    def done(self, record_dir: Path, phase: str) -> int:
        """How many jobs of ``phase`` are done (default: handlers that ran)."""
        ...


class BenchFailed(Exception):
    pass


def _wait(
    what: Callable[[], int], target: int, timeout: float, proc: subprocess.Popen[bytes]
) -> tuple[float, int]:
    deadline = time.monotonic() + timeout
    while True:
        seen = what()
        if seen >= target:
            return time.time(), seen
        if proc.poll() is not None:
            raise BenchFailed(f"worker exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            return time.time(), seen
        time.sleep(0.02)


def run_rep(
    adapter: Adapter, opts: Options, workdir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Throughput (worker stopped while enqueueing), then latency, the trickle and
    delayed jobs into the running worker; then stop it. Returns the figures (JSON-able)."""
    records = Path(os.environ["BENCH_RECORD_DIR"])
    out: dict[str, Any] = {"system": adapter.name, "concurrency": adapter.concurrency}
    t0, cpu0 = time.perf_counter(), time.process_time()
    adapter.enqueue("throughput", [None] * opts.jobs, 1)
    enqueue_s = time.perf_counter() - t0
    producer_cpu_ms = (time.process_time() - cpu0) * 1000 / opts.jobs
    log(f"{adapter.name}: enqueued {opts.jobs} in {enqueue_s:.2f} s; starting the worker")
    command, env = adapter.worker_command(), adapter.worker_env()
    proc = start_group(command, env, ROOT, workdir / "worker.log")
    rss = RssSampler(proc.pid)
    try:
        out["throughput"] = _throughput(adapter, opts, records, proc, enqueue_s)
        out["throughput"]["producer_cpu_ms_per_job"] = producer_cpu_ms
        log(f"{adapter.name}: throughput {out['throughput']}")
        out["latency"] = _latency(adapter, opts, records, proc)
        log(f"{adapter.name}: latency {_brief(out['latency'])}")
        out["trickle"] = _trickle(adapter, opts, records, proc)
        log(f"{adapter.name}: trickle {_brief(out['trickle'])}")
        out["delayed"] = _delayed(adapter, opts, records, proc, out["throughput"]["enqueue_rate"])
        log(f"{adapter.name}: delayed {_brief(out['delayed'])}")
    finally:
        out["worker_peak_rss_mb"] = rss.stop() / 2**20
        out["worker_stop"] = stop_group(proc)
    return out


def _brief(figures: dict[str, Any]) -> str:
    return f"p50 {figures['p50']:.1f} p99 {figures['p99']:.1f} ms"


def _throughput(
    adapter: Adapter,
    opts: Options,
    records: Path,
    proc: subprocess.Popen[bytes],
    enqueue_s: float,
) -> dict[str, Any]:
    launched = time.time()
    seen_at, seen = _wait(
        lambda: adapter.done(records, "throughput"), opts.jobs, opts.timeout, proc
    )
    starts = [r[2] for r in read(records, "throughput")]
    first, last = min(starts, default=math.nan), max(starts, default=math.nan)
    # Drain: from the first handler start to the last job done (the worker's own
    # start-up is reported apart, not counted).
    drain_s = (max(last, seen_at) if adapter.strict_done else last) - first
    return {
        "jobs": opts.jobs,
        "completed": seen,
        "enqueue_seconds": enqueue_s,
        "enqueue_rate": opts.jobs / enqueue_s,
        "startup_seconds": first - launched,
        "drain_seconds": drain_s,
        "drain_rate": seen / drain_s if drain_s > 0 else math.nan,
        "end_to_end_rate": seen / (enqueue_s + drain_s),
    }


def _latency(
    adapter: Adapter, opts: Options, records: Path, proc: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """``rate`` jobs/s for ``seconds`` s into the running worker, a tick every 10 ms."""
    per_tick = max(1, round(opts.rate * 0.01))
    total = int(opts.rate * opts.seconds)
    sent = 0
    begin, worker_cpu = time.perf_counter(), tree_cpu_seconds(proc.pid)
    while sent < total:
        n = min(per_tick, total - sent)
        adapter.enqueue("latency", [None] * n, n)
        sent += n
        delay = begin + sent / opts.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    produced_s = time.perf_counter() - begin
    _, seen = _wait(lambda: adapter.done(records, "latency"), total, opts.timeout, proc)
    worker_cpu = tree_cpu_seconds(proc.pid) - worker_cpu
    millis = [(s - e) * 1000 for e, _, s in read(records, "latency")]
    return {
        "target_rate": opts.rate,
        "achieved_rate": total / produced_s,
        "jobs": total,
        "completed": seen,
        # The worker's CPU (whole process tree) from the first enqueue to the last job
        # done, per job: what 500 jobs/s cost it, idle polling included.
        "worker_cpu_ms_per_job": worker_cpu * 1000 / total,
        **summary(millis),
        "quantiles": quantiles(millis),
    }


def _trickle(
    adapter: Adapter, opts: Options, records: Path, proc: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Jobs arriving alone (issue 20): ``rate`` jobs/s for ``seconds`` s, one enqueue
    call per job, evenly spaced, never two together; each pays every step of its way
    alone, where the latency phase's five per tick share a statement, a hint, a claim."""
    total = int(opts.rate * opts.seconds)
    begin = time.perf_counter()
    for sent in range(1, total + 1):
        adapter.enqueue("trickle", [None], 1)
        delay = begin + sent / opts.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    produced_s = time.perf_counter() - begin
    _, seen = _wait(lambda: adapter.done(records, "trickle"), total, opts.timeout, proc)
    millis = [(s - e) * 1000 for e, _, s in read(records, "trickle")]
    return {
        "target_rate": opts.rate,
        "achieved_rate": total / produced_s,
        "jobs": total,
        "completed": seen,
        **summary(millis),
        "quantiles": quantiles(millis),
    }


def _delayed(
    adapter: Adapter,
    opts: Options,
    records: Path,
    proc: subprocess.Popen[bytes],
    enqueue_rate: float,
) -> dict[str, Any]:
    """Jobs due over the next ``spread`` s, all enqueued before the first is due."""
    lead = 1.0 + 1.2 * opts.delayed / enqueue_rate
    first_due = time.time() + lead
    dues: list[float | None] = [
        first_due + opts.spread * i / opts.delayed for i in range(opts.delayed)
    ]
    adapter.enqueue("delayed", dues, 1)
    wait = lead + opts.spread + opts.timeout
    _, seen = _wait(lambda: adapter.done(records, "delayed"), opts.delayed, wait, proc)
    rows = read(records, "delayed")
    lags = [(s - d) * 1000 for _, d, s in rows]
    return {
        "jobs": opts.delayed,
        "completed": seen,
        "lead_seconds": lead,
        "late_inserts": sum(1 for e, d, _ in rows if e > d),
        **summary(lags),
        "quantiles": quantiles(lags),
    }


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1))


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The drivers' shared arguments: ``--out`` and the counts of :class:`Options`."""
    parser.add_argument("--out", type=Path, required=True)
    defaults = Options()
    for name in ("jobs", "rate", "delayed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    for name in ("seconds", "spread", "timeout"):
        parser.add_argument(f"--{name}", type=float, default=getattr(defaults, name))


def options(ns: argparse.Namespace) -> Options:
    return Options(ns.jobs, ns.rate, ns.seconds, ns.delayed, ns.spread, ns.timeout)


def measure(adapter: Adapter, opts: Options, workdir: Path, out: Path) -> dict[str, Any]:
    """:func:`run_rep`, plus the worker log's error count and tail, written to ``out``.
    On failure the log's last lines go to stderr."""
    log_path = workdir / "worker.log"
    try:
        result = run_rep(adapter, opts, workdir, progress)
    except BaseException:
        if log_path.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            progress("worker log (last lines):\n" + "\n".join(tail))
        raise
    text = log_path.read_text(errors="replace")
    result["worker_log_errors"] = text.count("ERROR")
    result["worker_log_tail"] = text.splitlines()[-5:]
    write_json(out, result)
    return result
