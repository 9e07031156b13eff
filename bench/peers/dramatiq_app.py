"""Dramatiq on Redis: ``dramatiq bench.peers.dramatiq_app``."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.compare_common import record
from bench.peers.settings import REDIS_URL, TOKEN

broker = RedisBroker(url=REDIS_URL, namespace=f"{TOKEN}-dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(phase, enqueued, due):
    record(phase, enqueued, due)
