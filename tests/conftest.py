"""Shared fixtures: real databases per test (``tests/backends.py``) and a wait helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from taskmill.store.database import Database
from tests import backends


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
        await backends.drop_postgres(name)


@pytest.fixture
async def postgres_url(postgres_template: str | None) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database (for tests of the production set-up)."""
    if postgres_template is not None:
        backends.unavailable(postgres_template)
    name, url = await backends.clone_postgres()
    try:
        yield url
    finally:
        await backends.drop_postgres(name)


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


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
