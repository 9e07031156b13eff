"""Logging set-up, called only by entry points (the CLI, ``Taskmill.run``)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` fit for a log line: a password in it becomes ``***`` (database, Redis and
    AMQP URLs carry theirs inline); a URL that cannot be parsed is not shown at all."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


# Stable ``extra`` keys that every formatter shows when present.
CONTEXT_KEYS = ("service", "job_id", "attempt", "merchant_id", "event")

# The services' names, as the runner names each service's task (runtime.services()).
SERVICES = frozenset(
    {"api", "executor", "queue-populator", "failure-watcher", "recurrence-manager"}
)
# Loggers whose records belong to one service whichever task logs them (a job's own
# task, a handler's thread, a request).
SERVICE_LOGGERS = (
    ("taskmill.task.", "executor"),
    ("taskmill.services.worker", "executor"),
    ("taskmill.executors.", "executor"),
    ("taskmill.services.queue_populator", "queue-populator"),
    ("taskmill.services.failure_watcher", "failure-watcher"),
    ("taskmill.services.recurrence_manager", "recurrence-manager"),
    ("taskmill.api.", "api"),
    ("uvicorn", "api"),
)


class ServiceFilter(logging.Filter):
    """Sets ``service`` on every record that lacks one: the service whose task is logging
    (``taskmill run`` runs each service in a task named after it), else the one owning
    the logger, else ``default`` (the process's only service, if it has one)."""

    def __init__(self, default: str | None = None) -> None:
        super().__init__()
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "service", None) is None:
            record.service = _task_service() or _logger_service(record.name) or self.default
        return True


def _task_service() -> str | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread (a sync handler)
        return None
    name = task.get_name() if task is not None else None
    return name if name in SERVICES else None


def _logger_service(logger: str) -> str | None:
    for prefix, service in SERVICE_LOGGERS:
        if logger == prefix.rstrip(".") or logger.startswith(prefix):
            return service
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for production log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            if (value := getattr(record, key, None)) is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for development, with the context keys appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{key}={value}"
            for key in CONTEXT_KEYS
            if (value := getattr(record, key, None)) is not None
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure_logging(level: str = "INFO", fmt: str = "text", service: str | None = None) -> None:
    """Send taskmill's logs to stderr in ``fmt`` (``text`` or ``json``), each record
    labelled with its ``service`` (``service``: the default, for one-service processes)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ServiceFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
