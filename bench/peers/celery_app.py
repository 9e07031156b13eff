"""Celery on Redis: ``celery -A bench.peers.celery_app worker``."""

from celery import Celery

from bench.compare_common import record
from bench.peers.settings import REDIS_URL, TOKEN

QUEUE = f"{TOKEN}-celery"
app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_transport_options={"global_keyprefix": f"{TOKEN}:"},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(phase, enqueued, due):
    record(phase, enqueued, due)
