"""Shared fixtures: real databases per test (``tests/backends.py``) and a wait helper."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.drivers import store_for
from tests import backends
from tests.plan import PLAN_SIZE


def _in_parallel_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """At the plan's size a scenario takes minutes: it gets 20 of them, not the default 2.
    In a parallel run the long scenarios start first, so the run does not end with one
    worker busy and the others idle (a stable sort: the order stays otherwise)."""
    if PLAN_SIZE:
        for item in items:
            if item.get_closest_marker("plan_size") and not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(1200))
    if _in_parallel_worker():
        items.sort(key=lambda item: not any(item.iter_markers("slow")) and not _planned(item))


def _planned(item: pytest.Item) -> bool:
    return item.get_closest_marker("plan_size") is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that stops a shared service would break the tests running beside it."""
    if _in_parallel_worker() and item.get_closest_marker("exclusive") is not None:
        pytest.fail(
            "this test stops or reconfigures a shared service: run it alone, "
            "`pytest -m exclusive` without -n (scripts/test.sh does)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head, made once per session."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    backends.make_sqlite_template(path)
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str | None]:
    """Why PostgreSQL cannot be used, or ``None`` when its template database is ready."""
    reason = backends.make_postgres_template()
    yield reason
    if reason is None:
        backends.drop_postgres_template()


@pytest.fixture
def sqlite_url(migrated_sqlite: Path, tmp_path: Path) -> str:
    """A fresh, already migrated SQLite file for this test."""
    return backends.clone_sqlite(migrated_sqlite, tmp_path / "taskmill.db")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(
    request: pytest.FixtureRequest,
    migrated_sqlite: Path,
    postgres_template: str | None,
    tmp_path: Path,
) -> AsyncIterator[str]:
    """A fresh, migrated database of each backend: the store suite runs on both."""
    if request.param == "sqlite":
        yield backends.clone_sqlite(migrated_sqlite, tmp_path / "taskmill.db")
        return
    if postgres_template is not None:
        backends.unavailable(postgres_template)
    name, url = await backends.clone_postgres()
    try:
        yield url
    finally:
        backends.drop_postgres_later(name)


@pytest.fixture
async def postgres_url(postgres_template: str | None) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database (for tests of the production set-up)."""
    if postgres_template is not None:
        backends.unavailable(postgres_template)
    name, url = await backends.clone_postgres()
    try:
        yield url
    finally:
        backends.drop_postgres_later(name)


@pytest.fixture
async def redis_available() -> None:
    """Fail in CI, skip elsewhere, when Redis is not reachable."""
    reason = await backends.redis_reachable()
    if reason is not None:
        backends.unavailable(reason)


@pytest.fixture
async def rabbitmq_available() -> None:
    """Fail in CI, skip elsewhere, when RabbitMQ is not reachable."""
    reason = await backends.rabbitmq_reachable()
    if reason is not None:
        backends.unavailable(reason)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.close()


@pytest.fixture
def store(db: Database) -> SqlStore:
    """The driver over ``db`` (what the services are given)."""
    return store_for(db)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
