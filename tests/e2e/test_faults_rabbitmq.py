"""Faults on the real services with PostgreSQL + RabbitMQ (separate processes): an executor
killed mid-run, a RabbitMQ restart with 1,000 jobs queued, dropped connections and a job
running longer than RabbitMQ's consumer timeout (RELIABILITY.md S1, S6, S7)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika
import pytest
from sqlalchemy import func, select

from taskmill.store.database import Database
from taskmill.store.replay import projection_diff
from taskmill.store.schema import job_runs
from tests import backends
from tests.conftest import wait_for
from tests.e2e.cluster import LEASE, WATCHER, Cluster, cluster, effects
from tests.e2e.test_faults import _enqueue, _event_counts, _statuses, _succeeded

pytestmark = pytest.mark.slow


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    reason = await backends.rabbitmq_reachable()
    if reason is not None:
        backends.unavailable(reason)
    database = Database.from_url(postgres_url)
    yield database
    await database.close()


@pytest.fixture
async def services(postgres_url: str, db: Database, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A cluster on RabbitMQ whose connections carry its prefix as their name (so a test can
    drop just them); its queue is deleted afterwards."""
    with cluster(postgres_url, backends.AMQP_URL, tmp_path) as c:
        c.broker_url = f"{backends.AMQP_URL}?name={c.prefix}"
        try:
            yield c
        finally:
            c.stop_all()
            await backends.delete_queues(c.prefix)


async def _runs_per_job(db: Database) -> Counter[str]:
    """Executions per job as the database recorded them (one ``job_runs`` row each)."""
    async with db.read() as conn:
        stmt = select(job_runs.c.job_id, func.count()).group_by(job_runs.c.job_id)
        return Counter({row.job_id: row[1] for row in (await conn.execute(stmt)).all()})


async def test_faults_rabbitmq_executor_sigkill_mid_run(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    ids = await _enqueue(postgres_url, 200, {"effects": str(log), "seconds": 3})
    services.start("queue-populator")
    services.start("failure-watcher")
    victim = services.start("executor", TASKMILL_WORKER__CONCURRENCY="200")

    async def all_running() -> bool:
        return len(effects(log)) == 200

    await wait_for(all_running, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()
    services.start("executor", TASKMILL_WORKER__CONCURRENCY="200")
    await wait_for(lambda: _succeeded(db, 200), timeout=LEASE + WATCHER + 3 + 30)
    recovered_in = time.monotonic() - killed_at
    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == set(ids) and set(runs.values()) == {2}  # 0 lost; killed once each
    assert set((await _runs_per_job(db)).values()) == {2}
    assert set((await _event_counts(db, "job.lease_expired")).values()) == {1}
    assert set((await _event_counts(db, "job.succeeded")).values()) == {1}
    assert await projection_diff(db) == []
    print(f"rabbitmq: recovered 200 killed jobs in {recovered_in:.1f}s")  # noqa: T201


@contextmanager
def _rabbitmq_stopped() -> Iterator[None]:
    """``stop_app`` (the node stays up; durable queues and persistent messages are on
    disk), then ``start_app`` whatever happens."""
    backends.rabbitmqctl("stop_app")
    try:
        yield
    finally:
        backends.rabbitmqctl("start_app")
        backends.rabbitmqctl("await_startup")


async def test_faults_rabbitmq_restart_with_1000_queued(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    count = 1000
    ids = await _enqueue(postgres_url, count, {"effects": str(log)})
    populator = services.start("queue-populator")

    async def all_queued() -> bool:
        return (await _statuses(db))["queued"] == count

    await wait_for(all_queued, timeout=60)
    populator.send_signal(signal.SIGTERM)
    populator.wait(timeout=20)
    with _rabbitmq_stopped():
        await asyncio.sleep(3)
    back_at = time.monotonic()
    # Durable queue, persistent messages, confirmed before the populator went on: every
    # hint survived the restart.
    assert (await backends.rabbitmq_queue_state(f"{services.prefix}.default"))[0] == count
    services.start("failure-watcher")
    services.start("executor", TASKMILL_WORKER__CONCURRENCY="50")
    await wait_for(lambda: _succeeded(db, count), timeout=90)
    done_in = time.monotonic() - back_at
    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == set(ids) and set(runs.values()) == {1}  # 0 lost, 0 duplicates
    assert set((await _runs_per_job(db)).values()) == {1}
    print(f"rabbitmq: 1000 queued jobs succeeded {done_in:.1f}s after the restart")  # noqa: T201


async def _fault_mid_flow(
    postgres_url: str,
    db: Database,
    services: Cluster,
    log: Path,
    fault: Callable[[], Awaitable[None]],
    **watcher_env: str,
) -> float:
    """Run 1,000 short jobs through the three services, inject ``fault`` after 100, and
    check that the services carry on by themselves (S6): work resumes within 10 s, no
    process exits, every job runs exactly once. Returns how long work took to resume."""
    count = 1000
    ids = await _enqueue(postgres_url, count, {"effects": str(log), "seconds": 0.02})
    processes = [
        services.start("queue-populator"),
        services.start("failure-watcher", **watcher_env),
        services.start("executor", TASKMILL_WORKER__CONCURRENCY="10"),
    ]

    async def some_done() -> bool:
        return len(effects(log)) >= 100

    await wait_for(some_done, timeout=60)
    await fault()
    back_at = time.monotonic()
    before = (await _statuses(db))["succeeded"]

    async def progressing() -> bool:
        return (await _statuses(db))["succeeded"] > before + 20

    await wait_for(progressing, timeout=10)
    resumed_in = time.monotonic() - back_at
    await wait_for(lambda: _succeeded(db, count), timeout=90)
    assert all(p.poll() is None for p in processes)  # reconnected, not restarted
    runs = Counter(job for job, _, _ in effects(log))
    assert set(runs) == set(ids) and set(runs.values()) == {1}  # 0 lost, 0 duplicates
    assert set((await _runs_per_job(db)).values()) == {1}
    return resumed_in


async def test_faults_rabbitmq_restart_mid_flow(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    async def restart() -> None:
        with _rabbitmq_stopped():
            await asyncio.sleep(3)

    # The watcher must not publish while RabbitMQ is down: services/loop.py retries only
    # database errors, so a BrokerError would end its process (a known gap, not the broker's).
    resumed_in = await _fault_mid_flow(
        postgres_url,
        db,
        services,
        tmp_path / "effects.log",
        restart,
        TASKMILL_SCHEDULER__REQUEUE_AFTER_SECONDS="60",
    )
    print(f"rabbitmq: work resumed {resumed_in:.1f}s after RabbitMQ came back")  # noqa: T201


async def test_faults_rabbitmq_dropped_connections_lose_nothing(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    async def drop() -> None:
        backends.close_rabbitmq_connections(services.prefix)  # every service's, mid-flow

    resumed_in = await _fault_mid_flow(postgres_url, db, services, tmp_path / "effects.log", drop)
    assert "CONNECTION_FORCED" in services.logs()  # the drop did reach the services
    print(f"rabbitmq: work resumed {resumed_in:.1f}s after the connections were dropped")  # noqa: T201


@contextmanager
def _rabbit_env(**values: int) -> Iterator[None]:
    """Set ``rabbit`` application variables at runtime, restoring the previous values."""
    previous = {}
    for key in values:
        shown = backends.rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()
        previous[key] = shown  # "{ok,1800000}" or "undefined"
    try:
        for key, value in values.items():
            backends.rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")
        yield
    finally:
        for key, shown in previous.items():
            if shown.startswith("{ok,"):
                old = shown.removeprefix("{ok,").removesuffix("}")
                backends.rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {old}).")
            else:
                backends.rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")


async def _unacked_delivery_is_punished(prefix: str, within: float) -> float:
    """Hold one delivery unacked and return how long RabbitMQ took to close the channel
    (PRECONDITION_FAILED, consumer timeout): proof that the lowered timeout is in force."""
    connection = await aio_pika.connect(backends.AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.probe", auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"probe"), routing_key=queue.name)
        arrived = asyncio.Event()

        async def hold(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
            arrived.set()  # and never ack

        await queue.consume(hold)
        await asyncio.wait_for(arrived.wait(), 5)
        started = time.monotonic()
        await asyncio.wait_for(channel.closed(), within)
        return time.monotonic() - started
    finally:
        await connection.close()


async def test_faults_rabbitmq_job_longer_than_the_consumer_timeout_runs_once(
    postgres_url: str, db: Database, services: Cluster, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    # 3 s consumer timeout, checked every second (3.10 checks on the channel tick, 60 s by
    # default). Both are read when a channel opens: set before the services start.
    with _rabbit_env(consumer_timeout=3000, channel_tick_interval=1000):
        punished_in = await _unacked_delivery_is_punished(services.prefix, within=15)
        assert punished_in < 10
        [long_job] = await _enqueue(postgres_url, 1, {"effects": str(log), "seconds": 10})
        short = await _enqueue(postgres_url, 10, {"effects": str(log), "seconds": 0.1})
        services.start("queue-populator")
        services.start("failure-watcher")
        services.start("executor", TASKMILL_WORKER__CONCURRENCY="20")
        await wait_for(lambda: _succeeded(db, 11), timeout=60)
    runs = Counter(job for job, _, _ in effects(log))
    assert runs[long_job] == 1 and set(runs) == {long_job, *short} and set(runs.values()) == {1}
    assert set((await _runs_per_job(db)).values()) == {1}
    logs = services.logs()
    assert "PRECONDITION_FAILED" not in logs and "claim failed" not in logs
    print(  # noqa: T201
        f"rabbitmq: an unacked delivery lost its channel after {punished_in:.1f}s; "
        "a 10 s job under ack-after-claim ran once"
    )
