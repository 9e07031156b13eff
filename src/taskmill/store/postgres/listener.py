"""Listening for PostgreSQL notifications (the channels are in ``store/notify.py``):
one connection per process, reconnected after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(
    url: str,
    channels: Sequence[str],
    on_notify: Callable[[str, str], None],
    stop: asyncio.Event,
    *,
    retry_seconds: float = 1.0,
) -> None:
    """Call ``on_notify(channel, payload)`` for each notification until ``stop``;
    reconnect after a database restart, and signal every channel (with an empty payload)
    after each (re)connect, since notifications sent while disconnected are lost."""
    import asyncpg  # the PostgreSQL extra; only this function needs it directly

    # A connection terminated mid-operation (pg_terminate_backend, a restart) can surface
    # as any of these, InternalClientError included ("cannot switch to state ...; another
    # operation is in progress", when LISTEN is sent as the termination arrives).
    lost = (
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
    )
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(_dsn(url))
        except lost as exc:
            log.warning("LISTEN connection failed, retrying: %s", exc)
            await _sleep_or_stop(retry_seconds, stop)
            continue
        try:
            await _listen_on(conn, channels, on_notify, stop)
        except lost as exc:
            log.warning("LISTEN connection failed, reconnecting: %s", exc)
        finally:
            if not conn.is_closed():
                try:
                    await conn.close(timeout=2)
                except lost:
                    conn.terminate()
        await _sleep_or_stop(0 if stop.is_set() else retry_seconds, stop)


async def _listen_on(
    conn: Any,
    channels: Sequence[str],
    on_notify: Callable[[str, str], None],
    stop: asyncio.Event,
) -> None:
    """Listen on an open connection until ``stop`` or until the connection drops."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    for channel in channels:
        await conn.add_listener(channel, lambda _c, _pid, ch, payload: on_notify(ch, payload))
    for channel in channels:
        on_notify(channel, "")
    await _first_set(stop, lost)
    if lost.is_set() and not stop.is_set():
        log.warning("LISTEN connection lost, reconnecting")


async def _first_set(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _sleep_or_stop(seconds: float, stop: asyncio.Event) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
