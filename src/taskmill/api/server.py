"""Serving the API with uvicorn inside taskmill's own event loop and signal handling.

uvicorn (h11) has no deadline for receiving a request: its keep-alive timer starts only
after a response, and any byte a client sends cancels it, so a client sending one header
byte every few seconds (slowloris), or none at all, holds a connection forever.
:func:`guarded_h11` adds that deadline (``api.request_read_timeout_seconds``).

uvicorn also believes ``X-Forwarded-For`` from loopback by default, so any local client
(or one behind a local proxy that passes the header on) could choose the address the
failed-key limiter counts against. Forwarded headers are honoured only from the
addresses in ``api.trusted_proxies`` (none by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from taskmill.runtime import Runtime
from taskmill.services.runner import ServiceMain

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process's owner (taskmill) stops it.

    uvicorn's own handlers would re-raise SIGTERM after serving, killing the other
    services before their graceful shutdown.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# The client still owes us (part of) a request: its headers or its body.
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-receipt deadline: a connection must deliver a
    whole request (headers and body) within ``read_timeout`` seconds of its first byte,
    and a new connection must start one within ``read_timeout``; otherwise it is closed.
    Time the application spends on a request, and idle keep-alive time between requests
    (uvicorn's own ``timeout_keep_alive``), do not count."""

    read_timeout: float = 15.0  # set per server by guarded_h11()
    _receipt_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _RECEIVING and not self.transport.is_closing():
            self._arm()  # keeps a running deadline: more bytes do not extend it
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._receipt_deadline is None:
            self._receipt_deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._receipt_deadline is not None:
            self._receipt_deadline.cancel()
            self._receipt_deadline = None

    def _expired(self) -> None:
        self._receipt_deadline = None
        if self.conn.their_state not in _RECEIVING or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()  # the app's receive() sees a disconnect
        self.transport.close()


def guarded_h11(read_timeout: float) -> type[H11Protocol]:
    """:class:`GuardedH11Protocol` with ``read_timeout`` (uvicorn takes a class)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"read_timeout": read_timeout})


def proxy_options(trusted_proxies: tuple[str, ...]) -> dict[str, Any]:
    """uvicorn's proxy settings: forwarded headers only from ``trusted_proxies``, never
    its defaults (on, loopback and ``FORWARDED_ALLOW_IPS`` trusted)."""
    if not trusted_proxies:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted_proxies)}


def api_service(app: FastAPI, host: str, port: int) -> ServiceMain:
    """A service serving ``app`` on ``host:port`` until the stop event."""

    async def main(stop: asyncio.Event) -> None:
        runtime: Runtime = app.state.runtime
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            lifespan="off",
            access_log=False,
            http=guarded_h11(runtime.settings.api.request_read_timeout_seconds),
            **proxy_options(runtime.settings.api.trusted_proxies),
        )
        server = _EmbeddedServer(config)
        serving = asyncio.create_task(server.serve(), name="uvicorn")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        await serving
        if not stop.is_set():
            raise RuntimeError(f"the API server on {host}:{port} stopped (port in use?)")
        log.info("API stopped")

    return main
