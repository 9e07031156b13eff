"""What a handler sees of the job it runs (seed 003's TaskContext)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field


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

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out, rescued elsewhere, or the worker stops."""
        return self._cancel.is_set()

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (a sync handler) up to ``timeout`` seconds for cancellation; True if cancelled."""
        return self._cancel.wait(timeout)
