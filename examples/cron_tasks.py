"""Cron schedules: 6-field cron expressions (seconds first) in a time zone.

Run it with ``python examples/cron_tasks.py``. It schedules a task every 2 seconds
(``*/2 * * * * *``) and declares a daily one at midnight in Europe/Berlin (``0 0 0 * * *``,
``@app.periodic``), shows
when the daily one fires next, waits until the every-2-seconds template produced two
succeeded jobs, switches both templates off and stops. It exits 0 on its own in a few
seconds (non-zero if the jobs did not run within the deadline).

Cron format, 6 fields: ``second minute hour day_of_month month day_of_week``
(5 fields, without the seconds, work too):

- ``0 0 0 * * *``    daily at midnight
- ``0 0 */6 * * *``  every 6 hours
- ``0 0 9 * * 1-5``  weekdays at 09:00
- ``*/30 * * * * *`` every 30 seconds
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from taskmill import JobFilter, JobStatus, TaskContext, Taskmill, Template

DEADLINE_SECONDS = 8.0
POLL_SECONDS = 0.05
BERLIN = "Europe/Berlin"


def build_app(database_url: str) -> Taskmill:
    app = Taskmill(database_url)

    # Declared in code: every start finds this template again (by name) instead of
    # adding one, and updates it if the declaration changed.
    @app.periodic(
        cron="0 0 0 * * *",  # midnight, local time in Berlin (DST handled)
        timezone=BERLIN,
        name="daily-report",
        payload={"report": "daily-report"},
    )
    @app.task("generate_report", max_retries=3, timeout=300)
    async def generate_report(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        print(f"  [generate_report] {payload['report']} (job {ctx.job_id[:8]})")
        return {"event_type": "report_generated", "report": payload["report"]}

    return app


async def wait_succeeded(app: Taskmill, template_id: str, times: int, deadline: float) -> int:
    """Poll until ``times`` instances of the template succeeded; return how many did."""
    done = JobFilter(template_id=template_id, statuses=[JobStatus.SUCCEEDED])
    while True:
        count = len(await app.list(done))
        if count >= times:
            return count
        if time.monotonic() > deadline:
            raise TimeoutError(f"template {template_id}: {count} of {times} jobs succeeded")
        await asyncio.sleep(POLL_SECONDS)


async def run_example(app: Taskmill) -> None:
    every_2s = await app.schedule(
        "generate_report", {"report": "pulse"}, cron="*/2 * * * * *", name="pulse"
    )
    daily = await app.get("daily-report")  # @app.periodic made it when the app opened
    assert isinstance(every_2s, Template)
    assert isinstance(daily, Template)
    assert daily.next_run_at is not None
    local = daily.next_run_at.astimezone(ZoneInfo(BERLIN))
    print(f"template {every_2s.name!r}: {every_2s.cron_expression!r} (UTC)")
    print(f"template {daily.name!r}: {daily.cron_expression!r} in {daily.timezone}")
    print(f"  next run: {daily.next_run_at.isoformat()} = {local:%Y-%m-%d %H:%M:%S %Z} local")

    started = time.monotonic()
    await app.start()
    count = await wait_succeeded(app, every_2s.id, 2, started + DEADLINE_SECONDS)
    elapsed = time.monotonic() - started

    for template in (every_2s, daily):
        await app.cancel(template.id, "example finished")
    remaining = [t.name for t in await app.templates() if t.active]

    print(f"\nsummary after {elapsed:.1f} s:")
    print(f"  {every_2s.name!r} produced {count} succeeded jobs")
    print(f"  {daily.name!r} did not fire yet (next: {local:%Y-%m-%d %H:%M %Z})")
    print(f"  active templates after cancelling: {remaining or 'none'}")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="taskmill-example-") as tmp:
        app = build_app(f"sqlite:///{Path(tmp) / 'cron.db'}")
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
