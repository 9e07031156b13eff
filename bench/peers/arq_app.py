"""arq on Redis: ``arq bench.peers.arq_app.WorkerSettings``."""

from arq.connections import RedisSettings

from bench.compare_common import record
from bench.peers.settings import REDIS_URL, TOKEN

QUEUE = f"{TOKEN}:arq"


async def noop(ctx, phase, enqueued, due):
    record(phase, enqueued, due)


class WorkerSettings:
    functions = (noop,)
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    keep_result = 0
    max_jobs = 10  # arq's default, stated here
