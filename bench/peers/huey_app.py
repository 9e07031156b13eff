"""Huey on Redis: ``huey_consumer bench.peers.huey_app.huey``."""

from huey import RedisHuey

from bench.compare_common import record
from bench.peers.settings import REDIS_URL, TOKEN

huey = RedisHuey(TOKEN, url=REDIS_URL, results=False)


@huey.task()
def noop(phase, enqueued, due):
    record(phase, enqueued, due)
