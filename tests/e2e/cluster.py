"""Real taskmill service processes on PostgreSQL + Redis or RabbitMQ, for fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests import backends

ROOT = Path(__file__).resolve().parents[2]

# Test-sized timings (RELIABILITY.md conventions): lease L, heartbeat H, watcher W, Q.
LEASE = 4.0
HEARTBEAT = 1.0
WATCHER = 0.5
REQUEUE = 2.0


@dataclass
class Cluster:
    """Service processes sharing one database and one broker prefix (Redis keys or
    RabbitMQ queues)."""

    database_url: str
    broker_url: str  # redis://… or amqp://…
    workdir: Path
    prefix: str = field(default_factory=lambda: f"taskmill-test-{uuid.uuid4().hex[:10]}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
        for key in ("DATABASE_URL", "REDIS_URL", "AMQP_URL"):
            env.pop(key, None)
        env.update(
            TASKMILL_DATABASE__URL=self.database_url,
            TASKMILL_BROKER__URL=self.broker_url,
            TASKMILL_BROKER__PREFIX=self.prefix,
            TASKMILL_BROKER__RECLAIM_IDLE_SECONDS="2",
            TASKMILL_WORKER__LEASE_SECONDS=str(LEASE),
            TASKMILL_WORKER__HEARTBEAT_SECONDS=str(HEARTBEAT),
            TASKMILL_WORKER__SHUTDOWN_GRACE_SECONDS="5",
            TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS="0.5",
            TASKMILL_SCHEDULER__WATCHER_INTERVAL_SECONDS=str(WATCHER),
            TASKMILL_SCHEDULER__REQUEUE_AFTER_SECONDS=str(REQUEUE),
            TASKMILL_SCHEDULER__WORKER_DEAD_AFTER_SECONDS="10",
            TASKMILL_RETRY__BASE_SECONDS="0",
            TASKMILL_API__SECRET_KEY_FILE=str(self.workdir / "secret"),
        )
        env.update(extra)
        return env

    def start(self, service: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{service}-{len(self.processes)}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from taskmill.cli.main import main; main()",
                service,
                "--app",
                "tests.fixtures.apps:app",
            ],
            cwd=ROOT,
            env=self.env(**extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.workdir.glob("*.log")))


@contextmanager
def cluster(database_url: str, broker_url: str, workdir: Path) -> Iterator[Cluster]:
    """A cluster whose processes are stopped, and then its Redis keys deleted, on exit
    (in that order: a running executor would create its consumer group again)."""
    running = Cluster(database_url, broker_url, workdir)
    try:
        yield running
    finally:
        running.stop_all()
        if running.broker_url.startswith("redis"):
            backends.delete_prefix_now(running.prefix)


def effects(path: Path) -> list[tuple[str, int, int]]:
    """``(job_id, attempt, pid)`` per execution, recorded before the work (record_effect)."""
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(job, int(attempt), int(pid)) for job, attempt, pid in rows]
