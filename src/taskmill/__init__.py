"""taskmill: a distributed task scheduler for Python teams.

Everything an application needs is importable from here: the library facade
:class:`Taskmill`, the handler's :class:`TaskContext`, ``Retry`` and ``Fail``, the
backoff policy, chains and groups (``Signature``, ``Chain``, ``Group``), the job,
template and event records with their filters and statuses, and
the errors taskmill raises. ``Taskmill`` and ``TaskContext`` are imported on first use,
so that ``import taskmill`` (and ``import taskmill.core``) stays free of I/O dependencies;
users' tests also have :mod:`taskmill.testing`.
"""

from typing import TYPE_CHECKING, Any

from taskmill.core.canvas import Chain, Group, Signature, UpstreamResults
from taskmill.core.errors import (
    BrokerError,
    ConfigError,
    Conflict,
    Fail,
    InvalidTransition,
    NotFound,
    QuotaExceeded,
    Retry,
    StoreError,
    StoreUnavailable,
    TaskmillError,
    ValidationError,
)
from taskmill.core.events import Event, EventFilter, EventType
from taskmill.core.jobs import (
    DependencyFailurePolicy,
    Job,
    JobFilter,
    JobRun,
    JobStatus,
    RunOutcome,
    ScheduleType,
)
from taskmill.core.progress import Progress
from taskmill.core.queues import QueuePause
from taskmill.core.retry import BackoffPolicy
from taskmill.core.templates import MisfirePolicy, OverlapPolicy, Template

__all__ = [
    "BackoffPolicy",
    "BrokerError",
    "Chain",
    "ConfigError",
    "Conflict",
    "DependencyFailurePolicy",
    "Event",
    "EventFilter",
    "EventType",
    "Fail",
    "Group",
    "InvalidTransition",
    "Job",
    "JobFilter",
    "JobRun",
    "JobStatus",
    "MisfirePolicy",
    "NotFound",
    "OverlapPolicy",
    "Progress",
    "QueuePause",
    "QuotaExceeded",
    "Retry",
    "RunOutcome",
    "ScheduleType",
    "Signature",
    "StoreError",
    "StoreUnavailable",
    "TaskContext",
    "Taskmill",
    "TaskmillError",
    "Template",
    "UpstreamResults",
    "ValidationError",
]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskmill.app import Taskmill
    from taskmill.executors.context import TaskContext


def __getattr__(name: str) -> Any:
    if name == "Taskmill":
        from taskmill.app import Taskmill

        return Taskmill
    if name == "TaskContext":
        from taskmill.executors.context import TaskContext

        return TaskContext
    raise AttributeError(name)
