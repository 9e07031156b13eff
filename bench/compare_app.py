"""The taskmill app ``bench.compare`` runs (``taskmill run --app bench.compare_app:app``):
one task, ``noop``, whose handler only records when it started (``compare_common.record``).

The payload is ``[phase, enqueued, due]``; settings come from the environment.
"""

from __future__ import annotations

from typing import Any

from bench.compare_common import record
from taskmill import TaskContext, Taskmill

TASK = "noop"


def build_app(database_url: str | None = None) -> Taskmill:
    app = Taskmill(database_url)

    @app.task(TASK)
    async def noop(ctx: TaskContext, payload: Any) -> None:
        phase, enqueued, due = payload
        record(phase, enqueued, due)

    return app


app = build_app()
