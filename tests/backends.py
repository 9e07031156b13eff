"""Real databases for the test suite: a migrated SQLite file or PostgreSQL database per
test, cloned from a template migrated once per session (STYLE.md habit 9)."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import sys
import threading
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from taskmill.core.errors import StoreError
from taskmill.store import migrate
from taskmill.store.database import Database

POSTGRES_ADMIN_URL = os.environ.get(
    "TASKMILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Per test session, so that concurrent sessions (two developers' runs) do not collide.
POSTGRES_TEMPLATE = f"taskmill_test_template_{os.getpid()}"
START_POSTGRES = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def services_required() -> bool:
    """CI sets this: an unreachable service then fails the run instead of skipping."""
    return os.environ.get("TASKMILL_TEST_REQUIRE_SERVICES") == "1"


def _db_url(name: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def _admin(statements: list[str]) -> None:
    admin = Database.from_url(POSTGRES_ADMIN_URL, pool_size=1)
    try:
        async with admin.engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await admin.close()


async def _migrate(url: str) -> None:
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.close()


def make_postgres_template() -> str | None:
    """Create and migrate the template database; ``None`` if PostgreSQL is unreachable."""
    try:
        asyncio.run(
            _admin(
                [
                    f"DROP DATABASE IF EXISTS {POSTGRES_TEMPLATE} WITH (FORCE)",
                    f"CREATE DATABASE {POSTGRES_TEMPLATE}",
                ]
            )
        )
    except (StoreError, OSError) as exc:
        return (
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({exc}); "
            f"start it with: {START_POSTGRES}"
        )
    asyncio.run(_migrate(_db_url(POSTGRES_TEMPLATE)))
    return None


def drop_postgres_template() -> None:
    finish_drops()
    asyncio.run(_admin([f"DROP DATABASE IF EXISTS {POSTGRES_TEMPLATE} WITH (FORCE)"]))


async def clone_postgres() -> tuple[str, str]:
    name = f"taskmill_test_{uuid.uuid4().hex[:12]}"
    await _admin([f"CREATE DATABASE {name} TEMPLATE {POSTGRES_TEMPLATE}"])
    return name, _db_url(name)


async def empty_postgres() -> tuple[str, str]:
    """A new PostgreSQL database with no schema at all (as a first deployment finds it)."""
    name = f"taskmill_test_{uuid.uuid4().hex[:12]}"
    await _admin([f"CREATE DATABASE {name}"])
    return name, _db_url(name)


async def drop_postgres(name: str) -> None:
    await _admin([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])


class _Dropper:
    """Drops finished tests' databases on a thread of its own, several at once.

    ``DROP DATABASE`` waits for a checkpoint (0.3-1 s on the loaded 2-core machine): done
    in each test's teardown it cost the suite minutes. Here the test goes on at once, and
    drops issued together share one checkpoint. :meth:`finish` waits for the last ones."""

    CONCURRENCY = 8

    def __init__(self) -> None:
        self._names: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def drop_later(self, name: str) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=asyncio.run, args=(self._drop_all(),), name="drop-databases", daemon=True
            )
            self._thread.start()
        self._names.put(name)

    def finish(self) -> None:
        if self._thread is not None:
            self._names.put(None)
            self._thread.join()
            self._thread = None

    async def _drop_all(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncpg.create_pool(
            POSTGRES_ADMIN_URL, min_size=0, max_size=self.CONCURRENCY
        ) as pool:
            while True:
                names = [await loop.run_in_executor(None, self._names.get)]
                while len(names) < self.CONCURRENCY and not self._names.empty():
                    names.append(self._names.get_nowait())
                done = None in names
                await asyncio.gather(*(self._drop(pool, n) for n in names if n is not None))
                if done:
                    return

    @staticmethod
    async def _drop(pool: asyncpg.Pool, name: str) -> None:
        try:
            await pool.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except (asyncpg.PostgresError, OSError) as exc:  # left behind, said so
            print(f"could not drop test database {name}: {exc}", file=sys.stderr)  # noqa: T201


_dropper = _Dropper()
drop_postgres_later = _dropper.drop_later
finish_drops = _dropper.finish


def make_sqlite_template(path: Path) -> None:
    asyncio.run(_migrate(f"sqlite:///{path}"))


def clone_sqlite(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def unavailable(reason: str) -> None:
    if services_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


REDIS_URL = os.environ.get("TASKMILL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_REDIS = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


async def redis_reachable() -> str | None:
    """Why Redis cannot be used, or ``None``."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"Redis at {REDIS_URL} is unreachable ({exc}); start it with: {START_REDIS}"
    finally:
        await client.aclose()
    return None


async def delete_prefix(prefix: str) -> None:
    """Remove this test's keys only (never FLUSHALL what the suite did not create)."""
    await asyncio.to_thread(delete_prefix_now, prefix)


def delete_prefix_now(prefix: str) -> None:
    """:func:`delete_prefix` for synchronous callers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


AMQP_URL = os.environ.get("TASKMILL_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
START_RABBITMQ = "rabbitmq-server -detached (then: rabbitmqctl await_startup)"


async def rabbitmq_reachable() -> str | None:
    """Why RabbitMQ cannot be used, or ``None``."""
    import aio_pika
    from aio_pika.exceptions import CONNECTION_EXCEPTIONS

    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
        return f"RabbitMQ at {AMQP_URL} is unreachable ({exc!r}); start it with: {START_RABBITMQ}"
    await connection.close()
    return None


async def delete_queues(prefix: str, queues: tuple[str, ...] = ("default",)) -> None:
    """Remove this test's RabbitMQ queues ``{prefix}.{queue}`` (deleting a missing one is
    a no-op in RabbitMQ)."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(f"{prefix}.{queue}")
    finally:
        await connection.close()


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (needs root or the rabbitmq user's Erlang cookie)."""
    import subprocess

    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def close_rabbitmq_connections(name: str) -> int:
    """Close, server-side, the RabbitMQ connections named ``name`` (``?name=`` in the URL):
    a dropped connection for these tests only, not for other users of the broker. Returns
    how many were closed."""
    shown = rabbitmqctl(
        "eval",
        '[rabbit_networking:close_connection(P, "taskmill test: dropped") '
        "|| P <- rabbit_networking:connections(), "
        f'lists:member({{<<"connection_name">>, longstr, <<"{name}">>}}, '
        "proplists:get_value(client_properties, "
        "rabbit_networking:connection_info(P, [client_properties])))].",
    )
    return shown.count("ok")  # one ``ok`` per closed connection: "[ok,ok]"


async def rabbitmq_queue_state(name: str) -> tuple[int, int]:
    """(ready messages, consumers) of RabbitMQ queue ``name``, seen from a new connection."""
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL, timeout=5)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        declared = queue.declaration_result
        return declared.message_count or 0, declared.consumer_count or 0
    finally:
        await connection.close()
