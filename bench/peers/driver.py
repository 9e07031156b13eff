"""The ``bench.compare`` driver for the peers (runs in bench/.venv-peers).

    bench/.venv-peers/bin/python -m bench.peers.driver SYSTEM --out FILE [--jobs N ...]

SYSTEM is one of ``celery``, ``rq``, ``dramatiq``, ``arq``, ``procrastinate``, ``huey``,
``huey-sqlite`` (SqliteHuey on a file in the driver's temporary directory).
Every key, queue, namespace and job id it uses contains a token of its own
(``cmp<hex>``); at the end it deletes those Redis keys (SCAN, never FLUSH), or drops
its scratch PostgreSQL database (Procrastinate). Runs ``compare_common.run_rep`` once.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.compare_common import add_options, count, measure, options, progress

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_DSN = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SYSTEMS = ("celery", "rq", "dramatiq", "arq", "procrastinate", "huey", "huey-sqlite")


def _when(due):
    return datetime.fromtimestamp(due, UTC)


class Peer:
    strict_done = False
    concurrency = ""

    def __init__(self, token):
        self.token = token
        self.name = type(self).__name__.lower()

    def worker_env(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def done(self, record_dir, phase):
        return count(record_dir, phase)

    def close(self):
        pass


class Celery(Peer):
    concurrency = "prefork pool, 2 child processes (-c 2, the default: one per core)"

    def __init__(self, token):
        super().__init__(token)
        from bench.peers.celery_app import noop

        self.task = noop

    def worker_command(self):
        return [
            str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "-P", "prefork",
            "-c", "2", "-l", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat",
        ]  # fmt: skip

    def enqueue(self, phase, dues, in_flight):
        for due in dues:
            eta = None if due is None else _when(due)
            self.task.apply_async((phase, time.time(), due), eta=eta)


class RQ(Peer):
    concurrency = "1 worker, fork per job, one job at a time (the default Worker)"

    def __init__(self, token):
        super().__init__(token)
        from redis import Redis
        from rq import Queue

        from bench.peers.rq_tasks import noop

        self.redis = Redis.from_url(REDIS_URL)
        self.queue = Queue(f"{token}-rq", connection=self.redis)
        self.noop = noop
        self.n = 0

    def worker_command(self):
        return [
            str(BIN / "rq"), "worker", "-u", REDIS_URL, "-n", f"{self.token}-worker",
            "--with-scheduler", "-q", self.queue.name,
        ]  # fmt: skip

    def enqueue(self, phase, dues, in_flight):
        for due in dues:
            self.n += 1
            job_id = f"{self.token}-{self.n}"
            args = (phase, time.time(), due)
            if due is None:
                self.queue.enqueue(self.noop, *args, job_id=job_id, result_ttl=0)
            else:
                self.queue.enqueue_at(_when(due), self.noop, *args, job_id=job_id, result_ttl=0)


class Dramatiq(Peer):
    concurrency = "1 process, 8 threads (--processes 1 --threads 8, dramatiq's default threads)"

    def __init__(self, token):
        super().__init__(token)
        from bench.peers.dramatiq_app import noop

        self.actor = noop

    def worker_command(self):
        return [
            str(BIN / "dramatiq"), "bench.peers.dramatiq_app", "--processes", "1",
            "--threads", "8",
        ]  # fmt: skip

    def enqueue(self, phase, dues, in_flight):
        for due in dues:
            now = time.time()
            if due is None:
                self.actor.send(phase, now, due)
            else:
                delay = max(0, int((due - now) * 1000))
                self.actor.send_with_options(args=(phase, now, due), delay=delay)


class Arq(Peer):
    concurrency = "1 process, asyncio, max_jobs 10 (arq's default); polls every 0.5 s (default)"

    def __init__(self, token):
        super().__init__(token)
        from arq import create_pool

        from bench.peers.arq_app import QUEUE, WorkerSettings

        self.queue = QUEUE
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(WorkerSettings.redis_settings))
        self.n = 0

    def worker_command(self):
        return [str(BIN / "arq"), "bench.peers.arq_app.WorkerSettings"]

    def enqueue(self, phase, dues, in_flight):
        self.loop.run_until_complete(self._enqueue(phase, dues, max(1, in_flight)))

    async def _enqueue(self, phase, dues, in_flight):
        async def one(due):
            self.n += 1
            options = {"_job_id": f"{self.token}-{self.n}", "_queue_name": self.queue}
            if due is not None:
                options["_defer_until"] = _when(due)
            await self.pool.enqueue_job("noop", phase, time.time(), due, **options)

        for first in range(0, len(dues), in_flight):
            await asyncio.gather(*(one(d) for d in dues[first : first + in_flight]))

    def close(self):
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()


class Procrastinate(Peer):
    concurrency = (
        "1 process, asyncio, --concurrency 10 (default 1); LISTEN/NOTIFY on, "
        "fetch_job_polling_interval 5 s (default)"
    )

    def __init__(self, token):
        super().__init__(token)
        from bench.peers.procrastinate_app import app, noop

        self.app = app
        self.task = noop
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(app.open_async())

    def worker_command(self):
        return [
            str(BIN / "procrastinate"), "--app=bench.peers.procrastinate_app.app", "worker",
            "--concurrency", "10", "--queues", "bench",
        ]  # fmt: skip

    def enqueue(self, phase, dues, in_flight):
        self.loop.run_until_complete(self._enqueue(phase, dues, max(1, in_flight)))

    async def _enqueue(self, phase, dues, in_flight):
        async def one(due):
            kwargs = {"phase": phase, "enqueued": time.time(), "due": due}
            if due is None:
                await self.task.defer_async(**kwargs)
            else:
                await self.task.configure(schedule_at=_when(due)).defer_async(**kwargs)

        for first in range(0, len(dues), in_flight):
            await asyncio.gather(*(one(d) for d in dues[first : first + in_flight]))

    def close(self):
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()


class Huey(Peer):
    concurrency = "1 process, 8 threads (-k thread -w 8; default -w 1); scheduler every 1 s"

    def __init__(self, token):
        super().__init__(token)
        from bench.peers.huey_app import noop

        self.task = noop

    def worker_command(self):
        return [str(BIN / "huey_consumer"), "bench.peers.huey_app.huey", "-k", "thread", "-w", "8"]

    def enqueue(self, phase, dues, in_flight):
        for due in dues:
            now = time.time()
            if due is None:
                self.task(phase, now, due)
            else:
                self.task.schedule(args=(phase, now, due), delay=max(0.0, due - now))


class HueySqlite(Huey):
    """Huey's embedded peer: SqliteHuey, the consumer polling the file."""

    concurrency = (
        "1 process, 8 threads (-k thread -w 8); polls the file: 0.1 s, x1.15 when idle, "
        "up to 10 s (its defaults)"
    )

    def __init__(self, token):
        Peer.__init__(self, token)
        self.name = "huey-sqlite"
        from bench.peers.huey_sqlite_app import noop

        self.task = noop

    def worker_command(self):
        return [str(BIN / "huey_consumer"), "bench.peers.huey_sqlite_app.huey", "-k", "thread",
                "-w", "8"]  # fmt: skip


PEERS = {"celery": Celery, "rq": RQ, "dramatiq": Dramatiq, "arq": Arq,
         "procrastinate": Procrastinate, "huey": Huey, "huey-sqlite": HueySqlite}  # fmt: skip


def delete_redis_keys(token):
    from redis import Redis

    client = Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{token}*", count=1000))
    for first in range(0, len(keys), 1000):
        client.delete(*keys[first : first + 1000])
    # RQ's shared sets name our queue and worker
    for shared in ("rq:queues", "rq:workers"):
        members = [m for m in client.smembers(shared) if token.encode() in m]
        if members:
            client.srem(shared, *members)
    client.close()
    return len(keys)


def _admin(sql):
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.peers.driver")
    parser.add_argument("system", choices=SYSTEMS)
    add_options(parser)
    ns = parser.parse_args(argv)
    opts = options(ns)
    token = f"cmp{uuid.uuid4().hex[:8]}"
    database = f"taskmill_bench_{token}" if ns.system == "procrastinate" else ""
    with tempfile.TemporaryDirectory(prefix="taskmill-compare-") as tmp:
        workdir = Path(tmp)
        records = workdir / "records"
        records.mkdir()
        os.environ.update(
            BENCH_RECORD_DIR=str(records),
            BENCH_TOKEN=token,
            BENCH_REDIS_URL=REDIS_URL,
            BENCH_HUEY_SQLITE_FILE=str(workdir / "huey.db"),
        )
        peer = None
        try:
            if database:
                _admin(f'CREATE DATABASE "{database}"')
                os.environ["BENCH_PG_DSN"] = ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}"
                import subprocess

                subprocess.run(
                    [str(BIN / "procrastinate"), "--app=bench.peers.procrastinate_app.app",
                     "schema", "--apply"],
                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                    capture_output=True, timeout=120,
                )  # fmt: skip
            peer = PEERS[ns.system](token)
            measure(peer, opts, workdir, ns.out)
        finally:
            if peer is not None:
                peer.close()
            if database:
                _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            progress(f"deleted {delete_redis_keys(token)} Redis keys with {token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
