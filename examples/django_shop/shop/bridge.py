"""Calling taskmill (asyncio) from Django's synchronous code: one event loop on a
thread of its own per process, where every call runs, so taskmill's connections stay
on the loop that opened them (``asyncio.run`` per call would open a new loop each time)."""

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop = asyncio.new_event_loop()
threading.Thread(target=_loop.run_forever, name="taskmill-bridge", daemon=True).start()


def call(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run ``coro`` on the bridge's loop and return its result (a sync function)."""
    return asyncio.run_coroutine_threadsafe(coro, _loop).result(timeout)
