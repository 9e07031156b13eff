"""Small helpers for tests that run jobs through a ``Taskmill`` app."""

from __future__ import annotations

from typing import Any

from taskmill import Taskmill
from taskmill.core.jobs import Job
from taskmill.testing import run_until_idle


async def job_of(app: Taskmill, ident: str) -> Job:
    """The job ``ident`` (not a template)."""
    got = await app.get(ident)
    assert isinstance(got, Job)
    return got


async def run_job(app: Taskmill, task: str, payload: Any, **options: Any) -> Job:
    """Schedule ``task`` now, run the app until idle, and return the job as it ended."""
    job = await app.schedule(task, payload, **options)
    await run_until_idle(app)
    return await job_of(app, job.id)
