"""The basics: immediate, delayed and interval jobs on an embedded scheduler.

Run it with ``python examples/basic_scheduler.py``: it uses a SQLite file in a temporary
directory, runs the services in this process (``await app.start()``), waits until the
immediate and the delayed job succeeded and the interval template fired twice, then
switches the template off, prints a summary and stops. It exits 0 on its own in a few
seconds (non-zero if something did not happen within the deadline).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskmill import Job, JobFilter, JobStatus, TaskContext, Taskmill, Template, ValidationError

DEADLINE_SECONDS = 8.0
POLL_SECONDS = 0.05


def build_app(database_url: str) -> Taskmill:
    """The tasks of the example: one async handler and one sync handler with ``validate``."""
    app = Taskmill(database_url)

    @app.task("generate_report", max_retries=3, timeout=30)
    async def generate_report(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        print(f"  [generate_report] {payload['report']} (attempt {ctx.attempt})")
        await asyncio.sleep(0.05)  # the real work would go here
        return {"event_type": "report_generated", "report": payload["report"]}

    def check_email(payload: Any) -> None:
        """Refuse a payload at ``schedule`` time, before anything is stored."""
        if not isinstance(payload, dict) or "@" not in str(payload.get("to", "")):
            raise ValueError("payload must be a dict with an email address in 'to'")

    @app.task("send_email", max_retries=3, timeout=30, validate=check_email)
    def send_email(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        # Sync handlers run in a thread pool; a long one should check ctx.cancelled.
        print(f"  [send_email] to {payload['to']} (attempt {ctx.attempt})")
        return {"event_type": "email_sent", "to": payload["to"]}

    return app


async def wait_succeeded(app: Taskmill, job_id: str, deadline: float) -> Job:
    """Poll ``app.get`` until the job succeeded; raise if it ended otherwise or took too long."""
    while True:
        job = await app.get(job_id)
        assert isinstance(job, Job)
        if job.status is JobStatus.SUCCEEDED:
            return job
        if job.status.is_terminal:
            raise RuntimeError(f"job {job_id} ended {job.status}: {job.last_error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status} at the deadline")
        await asyncio.sleep(POLL_SECONDS)


async def wait_fired(app: Taskmill, template_id: str, times: int, deadline: float) -> list[Job]:
    """Poll until the template's instances include ``times`` succeeded jobs."""
    done = JobFilter(template_id=template_id, statuses=[JobStatus.SUCCEEDED])
    while True:
        jobs = await app.list(done)
        if len(jobs) >= times:
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"template {template_id} fired {len(jobs)} of {times} times")
        await asyncio.sleep(POLL_SECONDS)


async def run_example(app: Taskmill) -> None:
    # Validation happens before anything is stored: this request is refused.
    try:
        await app.schedule("send_email", {"to": "nobody"})
    except ValidationError as exc:
        print(f"refused as expected: {exc}")

    immediate = await app.schedule("generate_report", {"report": "daily-sales"})
    delayed = await app.schedule("send_email", {"to": "ops@example.com"}, delay=1)
    every_second = await app.schedule(
        "generate_report", {"report": "heartbeat"}, interval=1, name="heartbeat"
    )
    assert isinstance(immediate, Job)
    assert isinstance(delayed, Job)
    assert isinstance(every_second, Template)
    print(f"scheduled job {immediate.id} now, job {delayed.id} at {delayed.run_at:%H:%M:%S}")
    print(f"scheduled template {every_second.name!r} every {every_second.interval_seconds:g} s")

    started = time.monotonic()
    deadline = started + DEADLINE_SECONDS
    await app.start()
    first = await wait_succeeded(app, immediate.id, deadline)
    second = await wait_succeeded(app, delayed.id, deadline)
    ticks = await wait_fired(app, every_second.id, 2, deadline)
    elapsed = time.monotonic() - started

    cancelled = await app.cancel(every_second.id, "example finished")
    assert isinstance(cancelled, Template)

    print(f"\nsummary after {elapsed:.1f} s:")
    print(f"  immediate  {first.task_type:<16} {first.status}  result={first.result}")
    print(f"  delayed    {second.task_type:<16} {second.status}  result={second.result}")
    print(f"  interval   {every_second.name:<16} {len(ticks)} runs succeeded")
    state = "active" if cancelled.active else "switched off"
    print(f"  template   {every_second.name:<16} {state}")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="taskmill-example-") as tmp:
        app = build_app(f"sqlite:///{Path(tmp) / 'scheduler.db'}")
        try:
            await run_example(app)
        finally:
            await app.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (TimeoutError, RuntimeError) as exc:
        print(f"example failed: {exc}", file=sys.stderr)
        sys.exit(1)
