"""S31: SQLite disk full (``PRAGMA max_page_count``) under the API and the services.

Pass (RELIABILITY.md): the API answers 507 (or 503) with a JSON error, never 500; no
half-written job (``count(jobs) == count(job.created events)``); ``PRAGMA
integrity_check`` is ``ok``; the services keep running; after raising the limit writes
work again within 5 s, without a restart, and every accepted job ends terminal; I1-I4.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from taskmill import TaskContext, Taskmill
from taskmill.api.app import create_app
from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS, Scope
from taskmill.runtime import Runtime
from taskmill.store.jobs import get_job
from taskmill.store.schema import events, jobs
from tests.conftest import wait_for
from tests.history import check_history

UNLIMITED = 1_073_741_823  # SQLite's default max_page_count
GATES: dict[str, asyncio.Event] = {}  # the "gated" task's gates, by name


class Disk:
    """A disk of ``pages`` pages for every transaction on every engine (the pragma is per
    connection and the SQLite writer keeps its connection, so it is applied as each
    transaction begins; raising it frees the disk)."""

    def __init__(self, runtime: Runtime) -> None:
        self.pages = UNLIMITED
        for engine in runtime.db.sync_engines:
            event.listen(engine, "begin", self._apply)

    def _apply(self, conn: Any) -> None:
        conn.exec_driver_sql(f"PRAGMA max_page_count = {int(self.pages)}")


@pytest.fixture
async def served(sqlite_url: str, tmp_path: Path) -> AsyncIterator[tuple[Taskmill, Runtime]]:
    settings = load_settings(
        "test",
        None,
        database={"url": sqlite_url},
        api={"secret_key_file": str(tmp_path / "secret")},
        scheduler={"poll_interval_seconds": 0.1, "watcher_interval_seconds": 0.2},
        worker={"lease_seconds": 2.0, "heartbeat_seconds": 0.5},
    )
    app = Taskmill(settings=settings)

    @app.task("echo", max_retries=0)
    async def echo(ctx: TaskContext, payload: Any) -> Any:
        return payload

    @app.task("gated", max_retries=5)
    async def gated(ctx: TaskContext, payload: Any) -> Any:
        await GATES[payload["gate"]].wait()  # until the test opens it
        return "x" * 32_768  # a result that needs new pages to be stored

    runtime = await app.open()
    yield app, runtime
    await app.stop()


def _fill(path: str) -> int:
    """Use up the file's free pages (a scratch table grown to a few pages past the end);
    return the page count, which as the limit leaves no room for any write."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS s31_filler (b BLOB)")
        conn.commit()
        conn.execute(f"PRAGMA max_page_count = {_page_count(path) + 4}")
        with contextlib.suppress(sqlite3.OperationalError):  # database or disk is full
            for _ in range(10_000):
                conn.execute("INSERT INTO s31_filler VALUES (zeroblob(1024))")
                conn.commit()
        pages: int = conn.execute("PRAGMA page_count").fetchone()[0]
    return pages


def _page_count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("PRAGMA page_count").fetchone()[0]
    return count


async def test_reliability_s31_sqlite_disk_full_answers_507_and_recovers(
    served: tuple[Taskmill, Runtime], sqlite_url: str
) -> None:
    """S31 (SQLite): a full disk is a 507 with a JSON error, and passes without restart."""
    app, runtime = served
    issued = await runtime.api_keys.issue(
        DEFAULT_MERCHANT_ID, "s31", [Scope.JOBS_READ, Scope.JOBS_WRITE], actor="test"
    )
    headers = {"x-api-key": issued.plaintext}
    disk = Disk(runtime)
    path = sqlite_url.removeprefix("sqlite:///")
    transport = httpx.ASGITransport(app=create_app(runtime))
    await app.start()  # the services run through the whole episode
    statuses: list[int] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://taskmill") as client:

        async def post(i: int) -> httpx.Response:
            body = {"task_type": "echo", "payload": {"i": i, "pad": "x" * 2000}}
            return await client.post("/jobs", json=body, headers=headers)

        disk.pages = _page_count(path) + 8  # a few pages left
        for i in range(300):
            response = await post(i)
            statuses.append(response.status_code)
            if response.status_code != 201:
                assert response.status_code in (503, 507), response.text
                error = response.json()["error"]
                assert error["type"] in ("storage_full", "unavailable"), error
            if statuses.count(507) + statuses.count(503) >= 20:
                break
        assert 201 in statuses and 507 in statuses, statuses
        assert 500 not in statuses
        # Reads still work while the disk is full.
        listed = await client.get("/jobs", headers=headers)
        assert listed.status_code == 200, listed.text

        disk.pages = UNLIMITED  # space is freed: no restart, writes work again within 5 s

        async def writable() -> bool:
            response = await post(-1)
            assert response.status_code in (201, 503, 507), response.text
            return response.status_code == 201

        await wait_for(writable, timeout=5, interval=0.1)

    async with runtime.db.read() as conn:
        job_count = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
        created = (
            await conn.execute(
                select(func.count()).select_from(events).where(events.c.type == "job.created")
            )
        ).scalar_one()
    assert job_count == created == statuses.count(201) + 1
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    ended = [JobStatus.SUCCEEDED, JobStatus.FAILED]

    async def all_terminal() -> bool:
        async with runtime.db.read() as conn:
            stmt = select(func.count()).where(jobs.c.status.not_in(ended))
            return (await conn.execute(stmt)).scalar_one() == 0

    await wait_for(all_terminal, timeout=30)
    # An echo job that ran while the disk was full lost its outcome write like a crashed
    # worker: rescued at lease expiry, and with max_retries=0 failed as worker_lost. No
    # job fails for any other reason.
    async with runtime.db.read() as conn:
        stmt = select(jobs.c.last_error).where(jobs.c.status == JobStatus.FAILED)
        reasons = set((await conn.execute(stmt)).scalars())
    assert reasons <= {"worker_lost"}, reasons
    await check_history(runtime.db, queued_grace_s=5.0, running_grace_s=1.0)


async def test_reliability_s31_job_running_when_the_disk_fills_ends_terminal(
    served: tuple[Taskmill, Runtime], sqlite_url: str, tmp_path: Path
) -> None:
    """S31: a job that finishes while the disk is full cannot record its outcome (its
    32 KiB result needs new pages); its lease runs out and it is run again; once space
    returns it ends succeeded, without a restart, and the history holds (I1-I4)."""
    app, runtime = served
    disk = Disk(runtime)
    path = sqlite_url.removeprefix("sqlite:///")
    gate = GATES[str(tmp_path)] = asyncio.Event()
    job = await app.schedule("gated", {"gate": str(tmp_path)})
    await app.start()

    async def running() -> bool:
        return (await get_job(runtime.db, job.id, ALL_MERCHANTS)).status == JobStatus.RUNNING

    await wait_for(running, timeout=10)
    # In a thread: blocking the event loop while SQLite waits for the write lock would
    # stall the service transaction holding it (it failed once as "database is locked").
    disk.pages = await asyncio.to_thread(_fill, path)  # not one page more: writes fail
    failed_writes = 0

    def refused(*_args: Any) -> None:
        nonlocal failed_writes
        failed_writes += 1

    for engine in runtime.db.sync_engines:
        event.listen(engine, "handle_error", refused)
    gate.set()  # the handler returns; its outcome write hits the full disk

    async def write_refused() -> bool:
        return failed_writes > 0

    await wait_for(write_refused, timeout=10)
    await asyncio.sleep(3.0)  # past the lease: it is rescued and run again, in vain
    assert (await get_job(runtime.db, job.id, ALL_MERCHANTS)).status != JobStatus.SUCCEEDED
    disk.pages = UNLIMITED

    async def terminal() -> bool:
        return (await get_job(runtime.db, job.id, ALL_MERCHANTS)).status in (
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
        )

    await wait_for(terminal, timeout=15)
    finished = await get_job(runtime.db, job.id, ALL_MERCHANTS)
    # Rescued when its lease ran out, run again, recorded once there was room.
    assert finished.status == JobStatus.SUCCEEDED and finished.attempt >= 2, finished
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    await check_history(runtime.db, queued_grace_s=5.0, running_grace_s=1.0)
