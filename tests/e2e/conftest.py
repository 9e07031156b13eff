"""Fixtures for the fault tests: the broker under test (Redis or RabbitMQ) and a cluster
of real service processes using it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests import backends
from tests.e2e.cluster import Cluster, cluster


@dataclass
class Broker:
    """One broker for a test: how to name its connections, lose its hints (the analogue
    of a restart without persistence) and drop its connections, for this test only."""

    kind: str  # "redis" or "rabbitmq"

    def url(self, prefix: str) -> str:
        if self.kind == "redis":
            return f"{backends.REDIS_URL}?client_name={prefix}"
        return f"{backends.AMQP_URL}?name={prefix}"

    async def lose_hints(self, prefix: str) -> None:
        """Redis: delete the prefix's keys (streams and consumer groups: what a restart
        without persistence or a FLUSHALL does to them). RabbitMQ: delete the queues."""
        if self.kind == "redis":
            await backends.delete_prefix(prefix)
        else:
            await backends.delete_queues(prefix)

    async def drop_connections(self, prefix: str) -> int:
        """Close, server-side, the services' broker connections; return how many."""
        if self.kind == "rabbitmq":
            return backends.close_rabbitmq_connections(prefix)
        client = aioredis.Redis.from_url(backends.REDIS_URL)
        try:
            mine = [c for c in await client.client_list() if c.get("name") == prefix]
            for info in mine:
                await client.client_kill_filter(_id=info["id"])
            return len(mine)
        finally:
            await client.aclose()

    async def cleanup(self, prefix: str) -> None:
        if self.kind == "redis":
            await backends.delete_prefix(prefix)
        else:
            await backends.delete_queues(prefix)


@pytest.fixture(params=["redis", "rabbitmq"])
async def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "redis":
        reason = await backends.redis_reachable()
    else:
        reason = await backends.rabbitmq_reachable()
    if reason is not None:
        backends.unavailable(reason)
    return Broker(request.param)


@pytest.fixture
async def services(postgres_url: str, broker: Broker, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Service processes on ``broker``, stopped and cleaned up after the test (request the
    module's ``db`` fixture first, so the database outlives them)."""
    with cluster(postgres_url, backends.REDIS_URL, tmp_path) as c:
        c.broker_url = broker.url(c.prefix)
        try:
            yield c
        finally:
            c.stop_all()
            await broker.cleanup(c.prefix)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test (``item.rep_call``): the UI tests' tabs take a
    screenshot when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``e2e``: scripts/test.sh runs those not also marked
    ``parallel`` one at a time, after the parallel step."""
    e2e = Path(__file__).parent
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
