"""Procrastinate on PostgreSQL: ``procrastinate --app=bench.peers.procrastinate_app.app worker``."""

from procrastinate import App, PsycopgConnector

from bench.compare_common import record
from bench.peers.settings import PG_DSN

app = App(connector=PsycopgConnector(conninfo=PG_DSN))


@app.task(name="noop", queue="bench")
async def noop(phase, enqueued, due):
    record(phase, enqueued, due)
