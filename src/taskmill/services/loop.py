"""The thin loop around a service's ``run_once()`` (STYLE.md habit 8)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import Protocol, TypeVar

from taskmill.core.clock import Clock
from taskmill.core.errors import BrokerError, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")


class PeriodicService(Protocol):
    """A service the loop drives: do one round of work, then say when to come back."""

    name: str

    async def run_once(self) -> int:
        """Do one bounded round of work; return how many items it handled."""
        ...

    async def next_wake_at(self) -> datetime | None:
        """The next time work falls due (``None``: unknown, wait for a signal or the poll)."""
        ...


class Waker:
    """Wakes a sleeping loop early (new work in this process)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        if timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


async def run_periodically(
    service: PeriodicService,
    *,
    clock: Clock,
    stop: asyncio.Event,
    waker: Waker,
    poll_interval: float,
    batch_size: int,
    error_backoff: float = 1.0,
    busy_pause: float = 0.0,
) -> None:
    """Call ``run_once`` until ``stop`` is set; between rounds wait for the earliest of a
    wake-up, the next due time, or ``poll_interval``. A full batch loops again at once,
    or after ``busy_pause`` (a background service leaving room to the others).

    Database and broker outages are logged and retried; any other exception ends the loop (and,
    through the runner, the process), as a dead side task must not go unnoticed.
    """
    while not stop.is_set():
        try:
            handled = await service.run_once()
            if handled >= batch_size:
                delay = busy_pause  # a full batch: more is probably waiting
            else:
                delay = await _until_due(service, clock, poll_interval)
                if handled == 0 and delay == 0:
                    # Due but not handled (held by something the service cannot see):
                    # never spin; the poll interval or a wake-up brings it back.
                    delay = poll_interval
        except (StoreError, BrokerError) as exc:
            # An outage of either is waited out: the database keeps every job, and a
            # job queued while the broker was away is announced again by the watcher.
            log.warning("%s: %s unavailable, retrying: %s", service.name, _what(exc), exc)
            delay = error_backoff
        if delay > 0:
            await unless_stopped(waker.wait(delay), stop)


def _what(exc: Exception) -> str:
    return "broker" if isinstance(exc, BrokerError) else "database"


async def _until_due(service: PeriodicService, clock: Clock, poll_interval: float) -> float:
    due = await service.next_wake_at()
    if due is None:
        return poll_interval
    return max(0.0, min(poll_interval, (due - clock.now()).total_seconds()))


async def unless_stopped(awaitable: Awaitable[T], stop: asyncio.Event) -> T | None:
    """Await ``awaitable`` unless ``stop`` is set first (then cancel it, return ``None``)."""
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
    return work.result() if work.done() and not work.cancelled() else None


def settle(done: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Hand a batched write's outcome (a result or the exception it raised) to the
    caller waiting on ``done``, unless it was settled already."""
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
