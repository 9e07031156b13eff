"""Waiting for jobs to finish (``Taskmill.wait``, ``GET /jobs/{id}?wait=``), cheaply.

Every caller waiting in this process shares one watcher: it reads which of the waited
jobs finished in one query (per 1,000 ids), when woken — a job finished in this process
(the worker), or on PostgreSQL the ``taskmill_finished`` notification (one ``LISTEN``
connection per process, opened at the first wait) — and otherwise every
``poll_seconds`` (the safety net for a lost notification, and the only path on SQLite
across processes). Checks are at least ``min_gap_seconds`` apart, so 1,000 waiters and
a stream of finishing jobs cost the database a few queries a second, never one per
waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from taskmill.core.errors import TaskmillError, ValidationError
from taskmill.core.jobs import Job
from taskmill.core.tenants import MerchantScope
from taskmill.store.protocol import Store

log = logging.getLogger(__name__)

#: The longest a library caller may wait at once (the API allows 60 s).
MAX_WAIT_SECONDS = 3600.0
#: Ids read per query (the store's bound).
CHECK_BATCH = 1000

#: Listens for finished jobs until the event is set, calling its first argument each time.
Listen = Callable[[Callable[[], None], asyncio.Event], Coroutine[Any, Any, None]]


def check_timeout(timeout: float, limit: float = MAX_WAIT_SECONDS, name: str = "timeout") -> float:
    """``timeout`` if it is between 0 and ``limit`` seconds (NaN is refused too)."""
    if not 0 <= timeout <= limit:
        raise ValidationError(name, f"must be between 0 and {limit:g} s")
    return timeout


class JobWaiters:
    """The callers waiting in this process for jobs to finish, and their one watcher."""

    def __init__(
        self,
        store: Store,
        *,
        poll_seconds: float,
        min_gap_seconds: float = 0.2,
        listen: Listen | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.min_gap_seconds = min_gap_seconds
        self._listen = listen
        self._waiting: dict[str, list[asyncio.Future[Job]]] = {}
        self._woken = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        #: Reads of finished jobs so far (for tests and the benchmark).
        self.checks = 0

    @property
    def waiting(self) -> int:
        """How many jobs callers wait on now."""
        return len(self._waiting)

    def wake(self) -> None:
        """Something may have finished: check soon (at most one check per gap)."""
        self._woken.set()

    async def wait(self, merchant_id: MerchantScope, job_id: str, timeout: float) -> Job:
        """The job once it is finished, or ``TimeoutError`` after ``timeout`` seconds;
        ``NotFound`` for an unknown job or another merchant's."""
        check_timeout(timeout)
        future: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        # Registered before the first read: a finish between the two is seen by the
        # next check.
        self._waiting.setdefault(job_id, []).append(future)
        try:
            job = await self.store.get_job(merchant_id, job_id)
            if job.status.is_terminal:
                return job
            self._start()
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout)
            except TimeoutError:
                raise TimeoutError(f"job {job_id} did not finish within {timeout:g} s") from None
        finally:
            self._forget(job_id, future)

    def _forget(self, job_id: str, future: asyncio.Future[Job]) -> None:
        futures = self._waiting.get(job_id, [])
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            self._waiting.pop(job_id, None)
        if not future.done():
            future.cancel()

    def _start(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="taskmill-waiters")
        if self._listen is not None and (self._listener is None or self._listener.done()):
            self._listener = asyncio.create_task(
                self._listen(self.wake, self._stop), name="taskmill-waiters-listen"
            )

    async def _watch(self) -> None:
        """Check while anyone waits; the task ends when nobody does (restarted by the
        next wait)."""
        while self._waiting:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.poll_seconds)
            self._woken.clear()
            await self._check()
            await asyncio.sleep(self.min_gap_seconds)

    async def _check(self) -> None:
        """Hand every finished job to its waiters; a failed read is logged and the next
        check tries again (a waiter then times out at worst)."""
        ids = list(self._waiting)
        for start in range(0, len(ids), CHECK_BATCH):
            try:
                self.checks += 1
                finished = await self.store.finished_jobs(ids[start : start + CHECK_BATCH])
            except TaskmillError as exc:
                log.warning("could not read finished jobs for waiting callers: %s", exc)
                return
            for job in finished:
                for future in self._waiting.get(job.id, []):
                    if not future.done():
                        future.set_result(job)

    async def close(self) -> None:
        """Stop the watcher and the listener; callers still waiting get ``CancelledError``."""
        self._stop.set()
        for task in (self._watcher, self._listener):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._watcher = self._listener = None
