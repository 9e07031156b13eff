"""taskmill in a FastAPI application: open it with the application, close it after.

::

    tm = Taskmill(database_url="sqlite:///shop.db")
    api = FastAPI(lifespan=lifespan(tm, run_services=True))

    @api.post("/orders")
    async def order(tm: Annotated[Taskmill, Depends(taskmill)]) -> ...: ...

``run_services=False`` (default): the web process only produces (schedules, waits,
reads); the executor and the scheduler run elsewhere (``taskmill run``, ``taskmill
executor``). ``True``: they run in the web process too (embedded, one process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request

from taskmill.app import Taskmill

__all__ = ["lifespan", "taskmill"]

STATE_KEY = "taskmill"


def lifespan(
    tm: Taskmill, *, run_services: bool = False
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that opens ``tm`` (connects, migrates) before the first
    request, and, with ``run_services``, runs its services in the background; at
    shutdown running jobs get the grace period and connections close. ``tm`` is kept
    in ``app.state`` for :func:`taskmill`. To add your own start-up, enter it inside
    yours: ``async with lifespan(tm)(app): yield``."""

    @asynccontextmanager
    async def managed(app: FastAPI) -> AsyncIterator[None]:
        if run_services:
            await tm.start()
        else:
            await tm.open()
        setattr(app.state, STATE_KEY, tm)
        try:
            yield
        finally:
            await tm.stop()

    return managed


def taskmill(request: Request) -> Taskmill:
    """A FastAPI dependency: the ``Taskmill`` the application's :func:`lifespan` opened."""
    tm = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(tm, Taskmill):
        raise RuntimeError("taskmill.integrations.fastapi.lifespan is not this app's lifespan")
    return tm
