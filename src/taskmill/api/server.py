"""Serving the API with uvicorn inside taskmill's own event loop and signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

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


def api_service(app: FastAPI, host: str, port: int) -> ServiceMain:
    """A service serving ``app`` on ``host:port`` until the stop event."""

    async def main(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan="off", access_log=False
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
