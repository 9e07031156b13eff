"""How long a SQLite write waits for the lock another process holds: SQLite's busy
handler against the writer thread's short waits (``store/engine.py``).

    .venv/bin/python -m bench.sqlite_lock_wait [--rate 200] [--seconds 5] [--hold-ms 1]

Two processes write to one WAL file at ``--rate`` transactions/s each (a row insert,
held ``--hold-ms`` before the commit, as a transaction of taskmill's does its
statements); each measures the time ``BEGIN IMMEDIATE`` took. Both run once with
``PRAGMA busy_timeout`` (SQLite's handler: sleeps of 1, 2, 5, 10... ms) and once with
the short waits (busy_timeout 0, retried every 0.1-2 ms). Prints p50/p99/max of the
wait per variant. Asserts nothing; needs nothing but SQLite.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.support import machine, percentile
from taskmill.store.engine import SQLITE_BUSY_TIMEOUT_MS, WRITER_BUSY_STEP_SECONDS


def _begin(conn: sqlite3.Connection, short: bool) -> None:
    if not short:
        conn.execute("BEGIN IMMEDIATE")
        return
    step = WRITER_BUSY_STEP_SECONDS[0]
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        time.sleep(step)
        step = min(step * 2, WRITER_BUSY_STEP_SECONDS[1])


def writer(path: str, short: bool, rate: float, seconds: float, hold: float, out: object) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={0 if short else SQLITE_BUSY_TIMEOUT_MS}")
    waits: list[float] = []
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        before = time.perf_counter()
        _begin(conn, short)
        waits.append((time.perf_counter() - before) * 1000)
        conn.execute("INSERT INTO t (v) VALUES (?)", (n,))
        time.sleep(hold)
        conn.execute("COMMIT")
        n += 1
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    conn.close()
    out.put(waits)  # type: ignore[attr-defined]


def run(short: bool, args: argparse.Namespace, directory: Path, rep: int) -> list[float]:
    path = str(directory / f"lock-{short}-{rep}.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)")
    queue: multiprocessing.Queue[list[float]] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=writer, args=(path, short, args.rate, args.seconds, args.hold_ms / 1000, queue)
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    waits = sorted(queue.get() + queue.get())
    for p in procs:
        p.join()
    return waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--hold-ms", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"two processes, {args.rate:g} write transactions/s each, held {args.hold_ms:g} ms")
    print(f"{'variant':<36} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'waited>1ms':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for short in (False, True):
                waits = run(short, args, Path(tmp), rep)
                label = "short waits (0.1-2 ms steps)" if short else "SQLite busy handler"
                late = sum(w > 1 for w in waits) / len(waits)
                print(
                    f"{label + f' #{rep + 1}':<36} {percentile(waits, 50):8.2f} "
                    f"{percentile(waits, 99):8.2f} {waits[-1]:8.2f} {late:10.1%}"
                )


if __name__ == "__main__":
    main()
