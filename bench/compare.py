"""taskmill side by side with Celery, RQ, Dramatiq, arq, Procrastinate and Huey.

    .venv/bin/python -m bench.compare            # full run: 3 repetitions of everything
    .venv/bin/python -m bench.compare --quick    # 1 repetition, small counts
    .venv/bin/python -m bench.compare --only taskmill-pg-redis,celery

Run from the project root. Makes bench/.venv-peers (git-ignored) with the peers
(bench/peers/requirements.txt) if it is missing; taskmill is measured from this
virtualenv. Each repetition runs, for every system in turn, one driver subprocess
(``bench.compare_taskmill`` or ``bench.peers.driver``) that starts one worker process,
runs the three scenarios of ``compare_common.run_rep`` and cleans up after itself. Then
``bench.api`` measures taskmill's ``POST /jobs``. Writes bench/results/compare-<date>.json,
.md and .png. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / "bench" / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
RESULTS = ROOT / "bench" / "results"
TASKMILL = ("taskmill-sqlite", "taskmill-pg", "taskmill-pg-redis", "taskmill-pg-rabbitmq")
PEERS = ("celery", "rq", "dramatiq", "arq", "procrastinate", "huey", "huey-sqlite")
BROKERS = {
    "taskmill-sqlite": "SQLite file",
    "taskmill-pg": "PostgreSQL",
    "taskmill-pg-redis": "PostgreSQL + Redis",
    "taskmill-pg-rabbitmq": "PostgreSQL + RabbitMQ",
    "celery": "Redis",
    "rq": "Redis",
    "dramatiq": "Redis",
    "arq": "Redis",
    "procrastinate": "PostgreSQL",
    "huey": "Redis",
    "huey-sqlite": "SQLite file (SqliteHuey)",
}
REFERENCE = "taskmill-pg-redis"
# (section, field, higher is better, label)
METRICS = (
    ("throughput", "enqueue_rate", True, "enqueue jobs/s"),
    ("throughput", "drain_rate", True, "drain jobs/s"),
    ("throughput", "end_to_end_rate", True, "end-to-end jobs/s"),
    ("throughput", "producer_cpu_ms_per_job", False, "producer CPU ms/job"),
    ("latency", "p50", False, "latency p50 ms"),
    ("latency", "p95", False, "latency p95 ms"),
    ("latency", "p99", False, "latency p99 ms"),
    ("latency", "max", False, "latency max ms"),
    ("latency", "worker_cpu_ms_per_job", False, "worker CPU ms/job at the latency rate"),
    ("trickle", "p50", False, "trickle (one job at a time) p50 ms"),
    ("trickle", "p99", False, "trickle p99 ms"),
    ("trickle", "max", False, "trickle max ms"),
    ("delayed", "p50", False, "delayed lag p50 ms"),
    ("delayed", "p99", False, "delayed lag p99 ms"),
    ("delayed", "max", False, "delayed lag max ms"),
    ("", "worker_peak_rss_mb", False, "worker peak RSS MB"),
)
DRIVER_TIMEOUT = 1800.0


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_peers_venv() -> None:
    """bench/.venv-peers with the peers, made (or completed) if an import fails."""
    check = "import celery, rq, dramatiq, arq, procrastinate, huey, matplotlib, psutil"
    if PEERS_PYTHON.exists():
        done = subprocess.run([str(PEERS_PYTHON), "-c", check], capture_output=True)
        if done.returncode == 0:
            return
    progress(f"making {PEERS_VENV} (pip install -r bench/peers/requirements.txt)")
    if not PEERS_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(PEERS_VENV)], check=True)
        subprocess.run([str(PEERS_PYTHON), "-m", "ensurepip", "--upgrade"], check=True)
    requirements = ROOT / "bench" / "peers" / "requirements.txt"
    subprocess.run(
        [str(PEERS_PYTHON), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True
    )


def wait_quiet(threshold: float, max_wait: float) -> bool:
    """Poll every 30 s until the 1-minute load average is below ``threshold``."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= threshold:
        if time.monotonic() > deadline:
            progress(f"load still {load()} after {max_wait:.0f} s: running anyway")
            return False
        progress(f"load average {load()}, waiting for < {threshold}")
        time.sleep(30)
    return True


def driver_command(system: str, out: Path, counts: dict[str, float]) -> list[str]:
    args = [f"--{k}={v}" for k, v in counts.items()]
    if system.startswith("taskmill-"):
        variant = system.removeprefix("taskmill-")
        return [sys.executable, "-m", "bench.compare_taskmill", variant, f"--out={out}", *args]
    return [str(PEERS_PYTHON), "-m", "bench.peers.driver", system, f"--out={out}", *args]


def run_driver(system: str, counts: dict[str, float], workdir: Path) -> dict[str, Any]:
    """One repetition of one system, in its own process group (killed on timeout)."""
    out = workdir / f"{system}.json"
    out.unlink(missing_ok=True)
    log = workdir / f"{system}.log"
    before = load()
    started = time.monotonic()
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            driver_command(system, out, counts),
            cwd=ROOT,
            stdout=stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=DRIVER_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = time.monotonic() - started
    if proc.returncode != 0 or not out.exists():
        tail = log.read_text(errors="replace").splitlines()[-15:]
        progress(f"{system} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        return {"error": f"exit {proc.returncode}", "log_tail": tail, "load_before": before}
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(load_before=before, load_after=load(), seconds=seconds)
    return result


def api_rate(quick: bool) -> dict[str, Any]:
    """taskmill's ``POST /jobs`` req/s on PostgreSQL, from ``bench.api``'s own report."""
    args = ["--backend", "postgresql", "--stored", "2000" if quick else "20000"]
    args += ["--duration", "3" if quick else "10"]
    before = load()
    done = subprocess.run(
        [sys.executable, "-m", "bench.api", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        start_new_session=True,
    )
    for line in done.stdout.splitlines():
        if line.strip().startswith("POST /jobs"):
            numbers = re.findall(r"\d+(?:\.\d+)?", line.split(")", 1)[1])
            # 2xx, non-2xx, req/s, p50, p99, api cpu, client cpu
            return {
                "req_per_s": float(numbers[2]),
                "p50_ms": float(numbers[3]),
                "p99_ms": float(numbers[4]),
                "non_2xx": int(numbers[1]),
                "load_before": before,
                "load_after": load(),
            }
    return {"error": f"bench.api exit {done.returncode}", "stderr": done.stderr[-2000:]}


# -- aggregation and report -----------------------------------------------------------------


def value(rep: dict[str, Any], section: str, field: str) -> float | None:
    holder = rep.get(section) if section else rep
    if not isinstance(holder, dict) or field not in holder:
        return None
    number = holder[field]
    return float(number) if isinstance(number, int | float) else None


def aggregate(reps: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in reps if "error" not in r]
    figures: dict[str, Any] = {}
    for section, field, _, label in METRICS:
        values = [v for r in ok if (v := value(r, section, field)) is not None]
        if values:
            figures[label] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "n": len(values),
            }
    pooled: dict[str, list[float]] = {}
    for key in ("latency", "delayed"):
        columns = [r[key]["quantiles"] for r in ok if r.get(key, {}).get("quantiles")]
        # The median over repetitions of each quantile: a representative distribution.
        pooled[key] = [statistics.median(col) for col in zip(*columns, strict=True)]
    incomplete = [
        f"{key}: {r[key]['completed']}/{r[key]['jobs']}"
        for r in ok
        for key in ("throughput", "latency", "trickle", "delayed")
        if key in r and r[key]["completed"] < r[key]["jobs"]
    ]
    return {
        "figures": figures,
        "pooled_quantiles": pooled,
        "failed_reps": len(reps) - len(ok),
        "incomplete": incomplete,
        "concurrency": ok[0]["concurrency"] if ok else "",
        "achieved_latency_rate": [round(r["latency"]["achieved_rate"]) for r in ok],
        "late_delayed_inserts": [r["delayed"]["late_inserts"] for r in ok],
    }


def fmt(number: float) -> str:
    if math.isnan(number):
        return "-"
    if number >= 100:
        return f"{number:,.0f}"
    return f"{number:.1f}" if number >= 10 else f"{number:.2f}"


def cell(figure: dict[str, float] | None) -> str:
    if figure is None:
        return "-"
    if figure["n"] == 1:
        return fmt(figure["median"])
    return f"{fmt(figure['median'])} ({fmt(figure['min'])}-{fmt(figure['max'])})"


def markdown(data: dict[str, Any]) -> str:
    systems: list[str] = data["systems"]
    results = data["results"]
    lines = [
        "| figure | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
        "| broker | " + " | ".join(BROKERS[s] for s in systems) + " |",
    ]
    for _, _, _, label in METRICS:
        row = [cell(results[s]["figures"].get(label)) for s in systems]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    api = data.get("api", [])
    rates = [a["req_per_s"] for a in api if "req_per_s" in a]
    if rates:
        spread = f" ({min(rates):.0f}-{max(rates):.0f})" if len(rates) > 1 else ""
        lines.append(
            f"\ntaskmill REST API `POST /jobs` (PostgreSQL, bench.api, 16 in flight): "
            f"{statistics.median(rates):.0f} req/s{spread}"
        )
    if REFERENCE in systems:
        lines += ["", ratio_table(data)]
    return "\n".join(lines)


def ratio_table(data: dict[str, Any]) -> str:
    """taskmill (PG+Redis) / peer, per figure, from the medians. For rates > 1 means
    taskmill is faster; for latencies and memory < 1 means taskmill is better."""
    results = data["results"]
    others = [s for s in data["systems"] if s != REFERENCE]
    lines = [
        f"| {REFERENCE} / peer | " + " | ".join(others) + " | better when |",
        "|---|" + "---|" * (len(others) + 1),
    ]
    reference = results[REFERENCE]["figures"]
    for _, _, higher, label in METRICS:
        row = []
        for other in others:
            mine, theirs = reference.get(label), results[other]["figures"].get(label)
            if mine is None or theirs is None or theirs["median"] <= 0:
                row.append("-")
            else:
                row.append(f"{mine['median'] / theirs['median']:.2f}")
        lines.append(f"| {label} | " + " | ".join(row) + f" | {'> 1' if higher else '< 1'} |")
    return "\n".join(lines)


# -- entry point ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="1 repetition, small counts (development)")
    add("--only", default="", help="comma-separated systems (or prefixes, e.g. taskmill)")
    add("--reps", type=int, help="repetitions (default 3, --quick 1)")
    add("--jobs", type=int, help="throughput jobs (default 20000, --quick 2000)")
    add("--rq-jobs", type=int, help="throughput jobs for RQ (fork per job; default 3000)")
    add("--wait-load", type=float, help="wait until the 1-min load is below this (default 0.7)")
    add("--max-wait", type=float, default=1800.0, help="seconds to wait for that at most")
    add("--no-api", action="store_true", help="skip the POST /jobs measurement")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    wanted = [w for w in ns.only.split(",") if w]
    systems = [s for s in (*TASKMILL, *PEERS) if not wanted or any(s.startswith(w) for w in wanted)]
    if not systems:
        print(f"--only {ns.only!r} names no system of {TASKMILL + PEERS}", file=sys.stderr)
        return 2
    reps = ns.reps or (1 if ns.quick else 3)
    counts: dict[str, float] = (
        {"jobs": 2000, "rate": 500, "seconds": 2, "delayed": 300, "spread": 3, "timeout": 60}
        if ns.quick
        else {"jobs": 20000, "rate": 500, "seconds": 10, "delayed": 2000, "spread": 10}
    )
    if ns.jobs:
        counts["jobs"] = ns.jobs
    rq_jobs = ns.rq_jobs or (1000 if ns.quick else 3000)
    if any(s in PEERS for s in systems):
        ensure_peers_venv()
    threshold = ns.wait_load if ns.wait_load is not None else (None if ns.quick else 0.7)
    quiet = wait_quiet(threshold, ns.max_wait) if threshold is not None else None
    started = datetime.now(UTC)
    data: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "src_dirty": bool(_git("status", "--porcelain", "src")),
        "machine": f"{os.cpu_count()} CPUs",
        "load_start": load(),
        "quiet_wait": {"threshold": threshold, "reached": quiet},
        "options": {**counts, "reps": reps, "rq_jobs": rq_jobs, "quick": ns.quick},
        "systems": systems,
        "runs": {s: [] for s in systems},
    }
    with tempfile.TemporaryDirectory(prefix="taskmill-compare-") as tmp:
        for rep in range(reps):
            for system in systems:  # round robin: drift in machine load hits all alike
                mine = dict(counts, jobs=rq_jobs) if system == "rq" else counts
                progress(f"rep {rep + 1}/{reps}: {system} (load {load()})")
                data["runs"][system].append(run_driver(system, mine, Path(tmp)))
        if "taskmill-pg-redis" in systems and not ns.no_api:
            data["api"] = []
            for rep in range(reps):
                progress(f"rep {rep + 1}/{reps}: taskmill API POST /jobs")
                data["api"].append(api_rate(ns.quick))
    data["load_end"] = load()
    report(data, started)
    return 0


def report(data: dict[str, Any], started: datetime) -> None:
    """Aggregate, write the JSON, markdown and PNG files, print the table."""
    systems: list[str] = data["systems"]
    data["results"] = {s: aggregate(data["runs"][s]) for s in systems}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"compare-{started.strftime('%Y%m%d-%H%M')}"
    table = markdown(data)
    data["table"] = table
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    stem.with_suffix(".md").write_text(table + "\n")
    header = (
        f"{data['date']}, commit {data['commit']}, load {data['load_start']} -> {data['load_end']}"
    )
    print(header + "\n\n" + table)
    for system in systems:
        r = data["results"][system]
        print(f"- {system}: {r['concurrency']}; failed reps {r['failed_reps']}", end="")
        print(
            f"; incomplete {r['incomplete'] or 'none'}; latency rate {r['achieved_latency_rate']}"
        )
    if PEERS_PYTHON.exists():
        plotted = subprocess.run(
            [str(PEERS_PYTHON), str(ROOT / "bench" / "peers" / "plot.py"),
             str(stem.with_suffix(".json")), str(stem.with_suffix(".png"))],
            capture_output=True, text=True,
        )  # fmt: skip
        if plotted.returncode != 0:
            progress(f"plot failed: {plotted.stderr[-1500:]}")
    print(f"\nwrote {stem}.json, .md, .png")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
