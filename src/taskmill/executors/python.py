"""Python handlers: registered by name, sync (in a thread pool) or async."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import check_job_options
from taskmill.core.queues import check_queue_name
from taskmill.core.rate_limits import RateLimit
from taskmill.core.retry import BackoffPolicy
from taskmill.executors.context import TaskContext

Handler = Callable[[TaskContext, Any], Any]
Validator = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A registered task type and its execution options."""

    name: str
    handler: Handler
    # None: the configured default (tasks.max_retries + 1), read when a job is scheduled,
    # so settings replaced after registration (``--env`` with ``--app``) still apply.
    max_attempts: int | None = 1
    timeout_seconds: float | None = None
    concurrency: int | None = None
    backoff: BackoffPolicy | None = None
    validator: Validator | None = None
    queue: str = "default"
    priority: int = 0
    builtin: bool = False  # provided by taskmill (http, process), not by the app
    # Job starts of this type across every executor (ADR 0014); stored by each executor
    # that starts with the task, the last one winning.
    rate_limit: RateLimit | None = None
    # Called once by each worker that starts with this task type (not by API or other
    # service processes): the process executor kills what a killed worker left running.
    on_worker_start: Callable[[], object] | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)

    def validate(self, payload: Any) -> None:
        """Run the task's ``validate``; any error becomes a ``ValidationError`` on ``payload``."""
        if self.validator is None:
            return
        try:
            self.validator(payload)
        except ValidationError:
            raise
        except Exception as exc:
            raise ValidationError("payload", f"{type(exc).__name__}: {exc}") from exc


# Built-in task types (taskmill's executors) and the setting that turns each on: asking
# for one that is off gets a reason saying so rather than "unknown task".
DISABLED_BUILTIN_SETTING = {"http": "http.enabled", "process": "process.enabled"}


class TaskRegistry:
    """Task types this process knows, by name."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskDefinition] = {}

    def add(self, definition: TaskDefinition) -> None:
        existing = self._tasks.get(definition.name)
        if existing is not None and not (existing.builtin and definition.builtin):
            # Registering a built-in again (a second Runtime on one app) replaces it.
            raise ValidationError("task", f"{definition.name!r} is already registered")
        check_job_options(
            max_retries=None if definition.max_attempts is None else definition.max_attempts - 1,
            timeout=definition.timeout_seconds,
            priority=definition.priority,
        )
        check_queue_name(definition.queue)
        if definition.concurrency is not None and definition.concurrency < 1:
            raise ValidationError("concurrency", "must be at least 1")
        self._tasks[definition.name] = definition

    def get(self, name: str) -> TaskDefinition:
        try:
            return self._tasks[name]
        except KeyError:
            if name in DISABLED_BUILTIN_SETTING:
                raise ValidationError(
                    "task_type",
                    f"executor_disabled: the built-in {name!r} task type is disabled in this "
                    f"deployment ({DISABLED_BUILTIN_SETTING[name]} is false)",
                ) from None
            known = ", ".join(sorted(self._tasks)) or "none"
            raise ValidationError("task_type", f"unknown task {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._tasks)

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(self._tasks.values())

    def __len__(self) -> int:
        return len(self._tasks)


class PythonExecutor:
    """Runs handlers: coroutines on the loop, plain functions on a bounded thread pool."""

    def __init__(self, registry: TaskRegistry, max_threads: int) -> None:
        self.registry = registry
        self._threads = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="taskmill")

    def execute(self, task_type: str, ctx: TaskContext, payload: Any) -> Awaitable[Any]:
        """Start the handler; the awaitable yields its result or raises its exception."""
        definition = self.registry.get(task_type)
        if definition.is_async:
            coro: Awaitable[Any] = definition.handler(ctx, payload)
            return coro
        loop = asyncio.get_running_loop()
        call = functools.partial(definition.handler, ctx, payload)
        return loop.run_in_executor(self._threads, call)

    def close(self) -> None:
        # Threads cannot be killed; those still running see ctx.cancelled and finish alone.
        self._threads.shutdown(wait=False, cancel_futures=True)
