"""Huey on SQLite (``SqliteHuey``), the embedded peer of ``taskmill run`` on SQLite:
``huey_consumer bench.peers.huey_sqlite_app.huey``."""

import os

from huey import SqliteHuey

from bench.compare_common import record
from bench.peers.settings import TOKEN

huey = SqliteHuey(TOKEN, filename=os.environ.get("BENCH_HUEY_SQLITE_FILE", f"/tmp/{TOKEN}.db"))


@huey.task()
def noop(phase, enqueued, due):
    record(phase, enqueued, due)
