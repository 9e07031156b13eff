"""The service loop waits out database and broker outages and dies on anything else."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.core.clock import SystemClock
from taskmill.core.errors import BrokerError, StoreUnavailable
from taskmill.services.loop import Waker, run_periodically
from taskmill.testing import FrozenClock


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


class Due:
    """A service that handled ``handled`` and is next due ``due_in`` after the clock."""

    name = "due"

    def __init__(self, clock: FrozenClock, handled: int, due_in: timedelta) -> None:
        self.clock = clock
        self.handled = handled
        self.due_in = due_in
        self.rounds = 0

    async def run_once(self) -> int:
        self.rounds += 1
        return self.handled

    async def next_wake_at(self) -> datetime | None:
        return self.clock.now() + self.due_in


class RecordingWaker(Waker):
    """Records how long the loop asks to sleep, and stops it at the second sleep."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self.stop = stop
        self.timeouts: list[float] = []

    async def wait(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        if len(self.timeouts) == 2:
            self.stop.set()


async def _sleeps(service: Due, clock: FrozenClock) -> tuple[list[float], int]:
    stop = asyncio.Event()
    waker = RecordingWaker(stop)
    await asyncio.wait_for(
        run_periodically(
            service, clock=clock, stop=stop, waker=waker, poll_interval=1.0, batch_size=500
        ),
        5,
    )
    return waker.timeouts, service.rounds


async def test_loop_sleeps_until_the_next_due_instant_not_the_poll() -> None:
    clock = FrozenClock(datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
    timeouts, _ = await _sleeps(Due(clock, 3, timedelta(microseconds=12_300)), clock)
    assert timeouts == [0.0123, 0.0123]


async def test_loop_comes_back_at_once_when_due_now() -> None:
    """A round full at its own (smaller) limit says it is due now: no sleep in between."""
    clock = FrozenClock(datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
    service = Due(clock, 32, timedelta(0))
    rounds = 0

    async def stop_after_three() -> int:
        nonlocal rounds
        rounds += 1
        return 0 if rounds >= 3 else 32

    service.run_once = stop_after_three  # type: ignore[method-assign]
    timeouts, _ = await _sleeps(service, clock)
    # Rounds 1 and 2 (32 handled, due now) loop at once; round 3 handled nothing while
    # due: the poll interval, never a spin.
    assert rounds == 4 and timeouts == [1.0, 1.0]
