"""The one error tree. Only ``api/errors.py`` maps it to HTTP; the CLI maps it to exit codes."""

from __future__ import annotations


class TaskmillError(Exception):
    """Base of every error taskmill raises on purpose."""


class ValidationError(TaskmillError):
    """Input was rejected; ``field`` names what was wrong and ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class QuotaExceeded(TaskmillError):
    """A merchant's quota is used up; ``field`` names which one (``templates``, ``jobs``)."""

    def __init__(self, field: str, limit: int) -> None:
        super().__init__(f"{field}: the merchant's quota of {limit} is used up")
        self.field = field
        self.limit = limit


class NotFound(TaskmillError):
    """The object does not exist, or belongs to another tenant (indistinguishable on purpose)."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(TaskmillError):
    """The request conflicts with the current state (duplicate key, wrong state)."""


class InvalidTransition(Conflict):
    """A job status change that the state machine does not allow."""

    def __init__(self, from_status: str, to_status: str) -> None:
        super().__init__(f"cannot move a job from {from_status!r} to {to_status!r}")
        self.from_status = from_status
        self.to_status = to_status


class StoreError(TaskmillError):
    """The database failed; the driver error is translated here by ``store/errors.py``."""


class StorageFull(StoreError):
    """The database refused a write because it is out of space."""


class StoreUnavailable(StoreError):
    """The database could not be reached or the connection was lost."""


class BrokerError(TaskmillError):
    """The message broker failed."""


class ConfigError(TaskmillError):
    """Configuration is invalid; the message names the key."""


class TimedOut(Exception):
    """Raised by a handler whose own deadline passed (a program's or a request's timeout):
    the attempt is recorded as ``timed_out`` and retried like any failure.

    Not a ``TimeoutError``: the worker reads those as the job's own timeout.
    """


class Retry(Exception):
    """Raised by a handler to ask for another attempt, optionally after ``delay`` seconds.

    It still consumes an attempt: a job that keeps raising ``Retry`` ends ``failed``
    after ``max_attempts``. Its opposite is :class:`Fail`.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class Fail(Exception):
    """Raised by a handler to fail the job now, with no further attempt whatever
    ``max_attempts`` allows: for errors another attempt cannot fix (a refused
    destination, a malformed payload). ``reason`` becomes the job's ``last_error``.

    What Celery's ``Reject(requeue=False)`` or an exception in Dramatiq's ``throws``
    does there.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
