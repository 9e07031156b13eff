"""The app ``bench.prune`` runs in its executor (``taskmill executor --app
bench.redis_app:app``): one task, ``touch``, whose handler makes one Redis round trip
(``INCR`` on a key of the bench's prefix), the stand-in for a handler's real I/O.

``BENCH_REDIS_URL`` and ``BENCH_REDIS_KEY`` come from the environment the bench sets;
the rest of the settings as for any ``taskmill`` command.
"""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as redis

from taskmill import TaskContext, Taskmill

TASK = "touch"
_client: redis.Redis | None = None


def build_app(settings: Any = None) -> Taskmill:
    """The app; the bench's producer builds it with its own ``settings``."""
    app = Taskmill(settings=settings)

    @app.task(TASK)
    async def touch(ctx: TaskContext, payload: Any) -> None:
        global _client
        if _client is None:
            _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        await _client.incr(os.environ["BENCH_REDIS_KEY"])

    return app


app = build_app()
