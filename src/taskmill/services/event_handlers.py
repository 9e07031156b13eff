"""Application event handlers (``@app.on_event``): each reads the event log from a cursor
persisted in the database, after the events' commit, at least once (a crash between
handling and advancing repeats events, never skips them). One process at a time holds a
handler's cursor (a lease); another takes over when it stops or dies. A failing handler
is retried a few times with backoff, then the event is logged and passed over: it never
blocks the worker, which runs beside it, nor the handler's later events for long."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskmill.core.clock import Clock
from taskmill.core.errors import StoreError
from taskmill.core.events import Event, EventFilter, EventType
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.observability import metrics
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[None] | None]

BATCH = 100
# A holder renews its lease (and saves its position) at least every third of this while
# it works; a process killed mid-batch hands over after at most this long.
LEASE_SECONDS = 10.0
ATTEMPTS = 5
FIRST_RETRY_SECONDS = 0.2
HANDLER_TIMEOUT_SECONDS = 60.0
# Event ids are taken when a row is inserted, so on PostgreSQL a transaction that took a
# lower id may commit after one with a higher id. A gap in the ids younger than this is
# waited for; an older one is a rolled-back transaction's, and is passed.
GAP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Subscription:
    """A handler, the event types it gets, and the name its cursor is stored under."""

    name: str
    types: tuple[EventType, ...]
    handler: EventHandler


class EventDispatcher:
    """Feeds each subscription the events after its cursor; a periodic service."""

    name = "event-handlers"

    def __init__(
        self, store: Store, clock: Clock, subscriptions: Sequence[Subscription], holder: str
    ) -> None:
        self.store = store
        self.clock = clock
        self.subscriptions = list(subscriptions)
        self.holder = holder

    async def run_once(self) -> int:
        handled = 0
        for subscription in self.subscriptions:
            try:
                handled = max(handled, await self._feed(subscription))
            except StoreError as exc:  # one subscription's trouble never stops the others
                log.warning("event handler %s: store unavailable: %s", subscription.name, exc)
        return handled

    async def next_wake_at(self) -> datetime | None:
        return None  # polled (scheduler.poll_interval_seconds)

    async def close(self) -> None:
        """Give every lease up, so another process takes over at once."""
        for subscription in self.subscriptions:
            try:
                await self.store.release_cursor(subscription.name, holder=self.holder)
            except StoreError as exc:
                log.warning("event handler %s: lease not released: %s", subscription.name, exc)

    async def _feed(self, subscription: Subscription) -> int:
        """One batch for one subscription; how many events it handled (``BATCH``: maybe
        more are waiting)."""
        now = self.clock.now()
        saved = await self.store.cursor_position(subscription.name)
        horizon = None if saved is None else await self._horizon(saved, now)
        if saved is not None and horizon is not None and horizon <= saved:
            # Nothing new: no lease taken or renewed, so an idle poll writes nothing
            # (a lease lapsed meanwhile is taken again, from the saved position).
            return 0
        position = await self.store.take_cursor(
            subscription.name, holder=self.holder, lease_seconds=LEASE_SECONDS, now=now
        )
        if position is None:
            return 0  # another process holds it
        if horizon is None or position != saved:
            # The cursor is new, or another process moved it between the two reads. Else
            # the horizon read from the same position stands (a later read could only
            # reach further: what it would add is read at the next poll).
            horizon = await self._horizon(position, now)
        if horizon <= position:
            return 0
        flt = EventFilter(
            types=subscription.types, after_id=position, up_to_id=horizon, limit=BATCH
        )
        found = await self.store.list_events(ALL_MERCHANTS, flt)
        renewed = asyncio.get_running_loop().time()
        for event in found:
            await self._handle(subscription, event)
            if asyncio.get_running_loop().time() - renewed > LEASE_SECONDS / 3:
                # A slow handler: keep the lease, and save the position reached so far.
                held = await self.store.advance_cursor(
                    subscription.name,
                    holder=self.holder,
                    position=event.id,
                    lease_seconds=LEASE_SECONDS,
                    now=self.clock.now(),
                )
                if not held:
                    return 0  # another process took over; it goes on from its position
                renewed = asyncio.get_running_loop().time()
        # A short batch read everything up to the horizon: the cursor moves past the
        # events of other types too.
        reached = found[-1].id if len(found) == BATCH else horizon
        await self.store.advance_cursor(
            subscription.name,
            holder=self.holder,
            position=reached,
            lease_seconds=LEASE_SECONDS,
            now=self.clock.now(),
        )
        return len(found)

    async def _horizon(self, after: int, now: datetime) -> int:
        return await self.store.event_horizon(after, gap_seconds=GAP_SECONDS, now=now)

    async def _handle(self, subscription: Subscription, event: Event) -> None:
        delay = FIRST_RETRY_SECONDS
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await asyncio.wait_for(_call(subscription.handler, event), HANDLER_TIMEOUT_SECONDS)
                return
            except Exception as exc:  # the handler is the application's: anything may fail
                if attempt == ATTEMPTS:
                    metrics.EVENT_HANDLER_FAILURES.labels(subscription.name).inc()
                    log.error(
                        "event handler %s failed %d times on event %d (%s), passed over: %r",
                        subscription.name,
                        ATTEMPTS,
                        event.id,
                        event.type,
                        exc,
                    )
                    return
                log.warning(
                    "event handler %s failed on event %d (try %d), retrying: %r",
                    subscription.name,
                    event.id,
                    attempt,
                    exc,
                )
                await asyncio.sleep(delay)
                delay *= 2


async def _call(handler: EventHandler, event: Event) -> None:
    if inspect.iscoroutinefunction(handler):
        await handler(event)
        return
    outcome: Any = await asyncio.to_thread(handler, event)  # a sync handler, in a thread
    if inspect.isawaitable(outcome):
        await outcome
