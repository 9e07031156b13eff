"""The service loop waits out database and broker outages and dies on anything else."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from taskmill.core.clock import SystemClock
from taskmill.core.errors import BrokerError, StoreUnavailable
from taskmill.services.loop import Waker, run_periodically


class Flaky:
    """A service whose rounds raise the given errors in turn, then stop the loop."""

    name = "flaky"

    def __init__(self, errors: list[Exception], stop: asyncio.Event) -> None:
        self.errors = errors
        self.stop = stop
        self.rounds = 0

    async def run_once(self) -> int:
        self.rounds += 1
        if self.errors:
            raise self.errors.pop(0)
        self.stop.set()
        return 0

    async def next_wake_at(self) -> datetime | None:
        return None


async def _run(service: Flaky, stop: asyncio.Event) -> None:
    await run_periodically(
        service,
        clock=SystemClock(),
        stop=stop,
        waker=Waker(),
        poll_interval=0.01,
        batch_size=10,
        error_backoff=0.01,
    )


async def test_loop_retries_after_broker_and_database_outages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    service = Flaky([BrokerError("redis gone"), StoreUnavailable("db gone")], stop)
    await asyncio.wait_for(_run(service, stop), 5)
    assert service.rounds == 3
    assert "flaky: broker unavailable, retrying: redis gone" in caplog.text
    assert "flaky: database unavailable, retrying: db gone" in caplog.text


async def test_loop_ends_on_a_programming_error() -> None:
    stop = asyncio.Event()
    service = Flaky([RuntimeError("bug")], stop)
    with pytest.raises(RuntimeError, match="bug"):
        await asyncio.wait_for(_run(service, stop), 5)
    assert service.rounds == 1
