"""A process started before its database (or during its restart) waits for it, retrying
with backoff and logging each try, for ``database.connect_timeout_seconds``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from taskmill.config import load_settings
from taskmill.core.errors import StoreUnavailable
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime
from tests.relay import PostgresRelay


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}"))


def _runtime(url: str, timeout: float) -> Runtime:
    database = {"url": url, "connect_timeout_seconds": timeout}
    return Runtime(load_settings(database=database), TaskRegistry())


async def test_first_connection_waits_for_a_database_that_comes_late(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens for 2 s, then PostgreSQL does (through a relay on that port):
    ``open()`` migrates and returns, after logging the failed tries."""
    port = _free_port()
    runtime = _runtime(_through(postgres_url, port), timeout=30)
    parts = urlsplit(postgres_url)
    relay = PostgresRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    caplog.set_level(logging.WARNING, logger="taskmill.runtime")
    try:
        opening = asyncio.create_task(runtime.open())
        await asyncio.sleep(2.0)
        assert not opening.done()
        await relay.start(port)
        await asyncio.wait_for(opening, timeout=15)
        assert await runtime.schema_is_current()
        tries = [r for r in caplog.records if "database unreachable (try" in r.getMessage()]
        assert len(tries) >= 2  # 0.5 s, then 1 s between tries
    finally:
        await runtime.close()
        await relay.cut()


async def _seconds_to_give_up(timeout: float) -> float:
    """How long ``open()`` takes to raise ``StoreUnavailable`` when nothing listens."""
    runtime = _runtime(f"postgresql://postgres@127.0.0.1:{_free_port()}/none", timeout)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable):
            await runtime.open()
    finally:
        await runtime.close()
    return time.monotonic() - started


async def test_first_connection_gives_up_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="taskmill.runtime")
    assert 1.5 <= await _seconds_to_give_up(1.5) < 10
    messages = [r.getMessage() for r in caplog.records]
    assert any("database unreachable (try 1)" in m for m in messages)
    assert any("database unreachable, " in m and "tries in 2 s" in m for m in messages)


async def test_first_connection_timeout_zero_fails_at_once() -> None:
    assert await _seconds_to_give_up(0) < 5
