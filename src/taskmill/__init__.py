"""taskmill: a distributed task scheduler for Python teams.

The library facade is :class:`taskmill.app.Taskmill`; it is imported lazily so that
``import taskmill.core`` stays free of I/O dependencies.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["Fail", "Retry", "TaskContext", "Taskmill"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from taskmill.app import Taskmill
    from taskmill.core.errors import Fail, Retry
    from taskmill.executors.context import TaskContext


def __getattr__(name: str) -> Any:
    if name == "Taskmill":
        from taskmill.app import Taskmill

        return Taskmill
    if name in ("Fail", "Retry"):
        from taskmill.core import errors

        return getattr(errors, name)
    if name == "TaskContext":
        from taskmill.executors.context import TaskContext

        return TaskContext
    raise AttributeError(name)
