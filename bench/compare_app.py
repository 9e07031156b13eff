"""The taskmill app ``bench.compare`` runs (``taskmill run --app bench.compare_app:app``):
one task, ``noop``, whose handler only records when it started (``compare_common.record``).

The payload is ``[phase, enqueued, due]``; settings come from the environment.
"""

from __future__ import annotations

from typing import Any

from bench.compare_common import record
from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings

TASK = "noop"


def build_app(database_url: str | None = None, broker: dict[str, str] | None = None) -> Taskmill:
    """The app; ``broker`` (``url``, ``prefix``) is the producer's, the workers' broker:
    ``schedule()`` publishes the hints of jobs due at once itself."""
    overrides: dict[str, Any] = {"broker": broker} if broker else {}
    if database_url:
        overrides["database"] = {"url": database_url}
    app = Taskmill(settings=load_settings(**overrides))

    @app.task(TASK)
    async def noop(ctx: TaskContext, payload: Any) -> None:
        phase, enqueued, due = payload
        record(phase, enqueued, due)

    return app


app = build_app()
