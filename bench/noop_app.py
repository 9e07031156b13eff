"""The app ``bench.embedded_sqlite`` runs with ``taskmill run --app bench.noop_app:app``
(and ``bench.api`` with ``taskmill api --app bench.noop_app:app``).

Settings (database URL, worker concurrency, poll interval) come from the environment,
as for any ``taskmill run``; the bench sets them. ``bench.schedules`` builds the same app
in its own process with :func:`build_app` and explicit settings.
"""

from __future__ import annotations

from typing import Any

from taskmill import TaskContext, Taskmill
from taskmill.config import Settings

TASK = "noop"


def build_app(database_url: str | None = None, settings: Settings | None = None) -> Taskmill:
    """A Taskmill with one task that does nothing (the bench's producer registers it too).

    ``settings``, when given, replace config/ENV.toml and the environment (the in-process
    benches pass the worker and scheduler settings they measure).
    """
    app = Taskmill(database_url, settings=settings)

    @app.task(TASK)
    async def noop(ctx: TaskContext, payload: Any) -> None:
        return None

    return app


app = build_app()
