"""What a handler sees of the job it runs (seed 003's TaskContext)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskmill.core.canvas import UpstreamResult, UpstreamResults
from taskmill.core.progress import check_progress

# Where a context sends progress: (job_id, attempt, fraction, message).
ProgressSink = Callable[[str, int, float, "str | None"], None]
# Where a context reads the jobs its job depends on, with their results.
UpstreamReader = Callable[[str], Awaitable[Sequence[UpstreamResult]]]


class _Reported(Awaitable[None]):
    """What ``ctx.progress`` returns: already done, so async handlers may ``await`` it
    and sync ones simply call it."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that finishes at once


_REPORTED = _Reported()


@dataclass(slots=True)
class TaskContext:
    """The running attempt: ids, attempt number, a logger, and cancellation.

    Async handlers are cancelled outright; sync handlers (run in a thread) should check
    :attr:`cancelled` between steps, since a thread cannot be interrupted.
    """

    job_id: str
    task_type: str
    attempt: int
    max_attempts: int
    merchant_id: str
    logger: logging.LoggerAdapter[logging.Logger]
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel_reason: str | None = None
    _progress: ProgressSink | None = field(default=None, repr=False)
    _upstream: UpstreamReader | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out, rescued elsewhere, or the worker stops."""
        return self._cancel.is_set()

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    def progress(self, fraction: float, message: str | None = None) -> Awaitable[None]:
        """Report how far the job is, ``fraction`` from 0 to 1, with an optional
        ``message`` (at most 200 characters): ``await ctx.progress(0.4, "step 2 of 5")``,
        or without ``await`` in a sync handler. Stored at most once a second (the latest
        report wins) and shown by ``GET /jobs/{id}``, ``app.progress(job_id)`` and the UI.
        A bad value raises ``ValidationError``."""
        fraction, message = check_progress(fraction, message)
        if self._progress is not None:
            self._progress(self.job_id, self.attempt, fraction, message)
        return _REPORTED

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (a sync handler) up to ``timeout`` seconds for cancellation; True if cancelled."""
        return self._cancel.wait(timeout)

    async def upstream_results(self) -> UpstreamResults:
        """The results of the jobs this one depends on (a chain's previous step, every
        member of a group before it, its ``depends_on``): job id -> result in creation
        order, ``.results`` as a list. Read from the store when called, one query (at
        most 1,000 jobs); empty for a job without dependencies. A sync handler (in a
        thread) calls :meth:`upstream_results_sync`."""
        if self._upstream is None:
            return UpstreamResults([])
        return UpstreamResults(await self._upstream(self.job_id))

    def upstream_results_sync(self, timeout: float = 30.0) -> UpstreamResults:
        """:meth:`upstream_results` for a sync handler: the read runs on the worker's
        event loop, this thread waits for it (at most ``timeout`` seconds)."""
        if self._loop is None:
            return UpstreamResults([])
        future = asyncio.run_coroutine_threadsafe(self.upstream_results(), self._loop)
        return future.result(timeout)
