"""Runs several services in one process until stopped; if one dies, all stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

ServiceMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def run_services(services: dict[str, ServiceMain], stop: asyncio.Event) -> None:
    """Start every service with the shared ``stop`` event and wait for them all.

    A service that returns or raises before ``stop`` is set is a dead side task: the
    others are asked to stop (gracefully) and its error is re-raised, so the process
    exits instead of limping on.
    """
    tasks: dict[asyncio.Task[None], str] = {
        asyncio.create_task(main(stop), name=name): name for name, main in services.items()
    }
    stopper: asyncio.Task[object] = asyncio.create_task(stop.wait(), name="stop")
    failure: BaseException | None = None
    try:
        done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopper}:
            exc = task.exception() if not task.cancelled() else None
            if exc is None and stop.is_set():
                continue  # finished because it was asked to
            name = tasks[task]  # type: ignore[index]
            log.error("service %s stopped unexpectedly: %r", name, exc)
            failure = exc or RuntimeError(f"service {name} stopped unexpectedly")
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
    for name, result in zip(tasks.values(), results, strict=True):
        if isinstance(result, Exception) and result is not failure:
            log.error("service %s failed while stopping: %r", name, result)
    if failure is not None:
        raise failure
