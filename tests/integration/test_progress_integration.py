"""Progress: a handler reports with ``ctx.progress`` (async with ``await``, sync
without), the latest report of the current attempt is stored at most once a second, and
``app.progress``, ``GET /jobs/{id}`` show it; on both databases."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob
from taskmill.store.protocol import ProgressReport
from tests.conftest import wait_for
from tests.integration.api_fixtures import Api, api  # noqa: F401  (fixture)
from tests.store import NOW, running_job

OTHER_MERCHANT = "11111111-1111-1111-1111-111111111111"


async def test_store_keeps_the_current_attempts_latest_report(db: Database) -> None:
    store = store_for(db)
    job_id = await running_job(db)  # attempt 1
    await store.record_progress(
        [
            ProgressReport(job_id, 1, 0.25, "a quarter", NOW),
            ProgressReport("no-such-job", 1, 0.5, None, NOW),  # skipped, not an error
        ]
    )
    await store.record_progress([ProgressReport(job_id, 1, 0.5, "half", NOW)])
    seen = await store.get_progress(ALL_MERCHANTS, job_id)
    assert seen is not None and (seen.fraction, seen.message) == (0.5, "half")
    assert await store.get_progress(OTHER_MERCHANT, job_id) is None  # another tenant's
    # A report of an earlier attempt is not the current attempt's progress.
    await store.record_progress([ProgressReport(job_id, 0, 0.9, "stale", NOW)])
    assert await store.get_progress(ALL_MERCHANTS, job_id) is None
    created = await store.create_job(NewJob("t", NOW), actor="a", now=NOW, queue_if_due=True)
    assert await store.get_progress(ALL_MERCHANTS, created.job.id) is None


def test_progress_refuses_bad_values() -> None:
    ctx = TaskContext("j", "t", 1, 1, "m", logger=None)  # type: ignore[arg-type]
    for bad in (1.5, -0.1, float("nan"), "half", True):
        with pytest.raises(ValidationError, match="progress"):
            ctx.progress(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="message"):
        ctx.progress(0.5, "x" * 201)
    with pytest.raises(ValidationError, match="message"):
        ctx.progress(0.5, "nul\x00")


def _app(url: str) -> Taskmill:
    return Taskmill(
        settings=load_settings("test", None, database={"url": url}, worker={"concurrency": 4})
    )


async def test_handlers_report_and_writes_are_throttled(database_url: str) -> None:
    app = _app(database_url)
    release = threading.Event()

    @app.task("crunch")
    async def crunch(ctx: TaskContext, payload: Any) -> None:
        for step in range(1, 1001):  # a tight loop: 1,000 reports
            await ctx.progress(step / 1000, f"step {step} of 1000")
        await asyncio.to_thread(release.wait, 30)

    @app.task("sync_crunch")
    def sync_crunch(ctx: TaskContext, payload: Any) -> None:
        ctx.progress(0.5, "half, from a thread")
        release.wait(30)

    writes: list[int] = []
    store = (await app.open()).store
    record = store.record_progress

    async def counted(reports: Any) -> None:
        writes.append(len(reports))
        await record(reports)

    store.record_progress = counted  # type: ignore[method-assign]
    await app.start()
    try:
        job = await app.schedule("crunch")
        threaded = await app.schedule("sync_crunch")

        async def reported(job_id: str, fraction: float) -> bool:
            progress = await app.progress(job_id)
            return progress is not None and progress.fraction == fraction

        await wait_for(lambda: reported(job.id, 1.0))
        await wait_for(lambda: reported(threaded.id, 0.5))
        latest = await app.progress(job.id)
        assert latest is not None and latest.message == "step 1000 of 1000"
        await asyncio.sleep(1.5)  # another write interval: nothing new was reported
        # 1,001 reports, written once a second: a handful of writes, not a thousand.
        assert 0 < len(writes) <= 6 and sum(writes) <= 12
    finally:
        release.set()
        await app.stop()
    assert (await _status(app, job.id)) is JobStatus.SUCCEEDED
    await app.stop()


async def _status(app: Taskmill, job_id: str) -> JobStatus:
    found = await app.get(job_id)
    assert hasattr(found, "status")
    status: JobStatus = found.status
    return status


async def test_api_shows_progress_on_the_job(api: Api, tmp_path: Path) -> None:  # noqa: F811
    created = await api.job(api.a)
    store = api.runtime.store
    await store.record_progress([ProgressReport(created["id"], 0, 0.3, "x", NOW)])
    job = (await api.client.get(f"/jobs/{created['id']}", headers=api.a)).json()
    assert job["progress"] is not None and job["progress"]["fraction"] == 0.3
    other = await api.client.get(f"/jobs/{created['id']}", headers=api.b)
    assert other.status_code == 404
