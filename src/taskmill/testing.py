"""Helpers for users' own tests: a frozen clock and ``run_until_idle``."""

from __future__ import annotations

from taskmill.app import Taskmill
from taskmill.core.clock import FrozenClock

__all__ = ["FrozenClock", "run_until_idle"]


async def run_until_idle(app: Taskmill, max_rounds: int = 1000) -> int:
    """Run every service in burst mode until nothing is left to do *now*; return how much
    was done. Jobs due later (by the app's clock) stay scheduled: advance a
    :class:`FrozenClock` and call again. Handlers run for real, in this event loop."""
    runtime = await app.open()
    await runtime.worker.declare_rate_limits()  # as the executor does at its start
    total = 0
    for _ in range(max_rounds):
        done = await runtime.recurrence.run_once()
        done += await runtime.populator.run_once()
        done += await runtime.worker.run_once()
        await runtime.worker.drain()
        done += await runtime.watcher.run_once()
        if done == 0:
            return total
        total += done
    raise RuntimeError(f"still busy after {max_rounds} rounds (a template firing every tick?)")
