"""S32: SQLite write contention. ``taskmill run`` (API + every service, one process) while
4 concurrent API writers create 2,000 jobs.

Pass (RELIABILITY.md): 0 ``database is locked`` errors reach a client or the log (writes
use ``BEGIN IMMEDIATE`` + ``busy_timeout``); every request is accepted and 100 % of the
jobs succeed, each executed once; I1-I5.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus
from taskmill.core.tenants import Scope
from taskmill.runtime import Runtime
from taskmill.store.database import Database
from taskmill.store.schema import jobs
from tests.conftest import wait_for
from tests.e2e.test_cli import free_port, running
from tests.fixtures.apps import build_app
from tests.history import check_history, create_effects_table, executions

JOBS, WRITERS = 2000, 4
# About 40 s on the 2-core machine; its wait alone may take 120 s on a slow one.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def _issue_key(sqlite_url: str) -> str:
    """A jobs key, hashed with the secret ``taskmill run`` will use (beside the database)."""
    secret = Path(sqlite_url.removeprefix("sqlite:///")).with_name("taskmill.secret")
    settings = load_settings(
        "test", None, database={"url": sqlite_url}, api={"secret_key_file": str(secret)}
    )
    runtime = Runtime(settings, build_app(sqlite_url).registry)
    try:
        await runtime.open()
        issued = await runtime.api_keys.issue(
            DEFAULT_MERCHANT_ID, "s32", [Scope.JOBS_READ, Scope.JOBS_WRITE], actor="test"
        )
        return issued.plaintext
    finally:
        await runtime.close()


async def test_reliability_s32_sqlite_write_contention(sqlite_url: str) -> None:
    """S32 (SQLite): 4 API writers against ``taskmill run``, no 'database is locked'."""
    db = Database.from_url(sqlite_url)
    await create_effects_table(db)
    key = await _issue_key(sqlite_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    answers: Counter[int] = Counter()
    bodies: list[str] = []
    try:
        with running(sqlite_url, api_port=port):
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:

                async def api_up() -> bool:
                    try:
                        return (await client.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_for(api_up, timeout=30, interval=0.2)

                async def writer(n: int) -> None:
                    for i in range(JOBS // WRITERS):
                        response = await client.post(
                            "/jobs",
                            json={"task_type": "record_effect", "payload": {"w": n, "i": i}},
                            headers={"x-api-key": key},
                        )
                        answers[response.status_code] += 1
                        if response.status_code != 201:
                            bodies.append(response.text)

                await asyncio.gather(*(writer(n) for n in range(WRITERS)))

            async def all_succeeded() -> bool:
                async with db.read() as conn:
                    stmt = select(func.count()).where(jobs.c.status == JobStatus.SUCCEEDED)
                    return (await conn.execute(stmt)).scalar_one() == JOBS

            await wait_for(all_succeeded, timeout=120, interval=0.5)
        log = Path(sqlite_url.removeprefix("sqlite:///")).with_name("taskmill.log").read_text()
        assert answers == {201: JOBS}, (answers, bodies[:5])
        assert "database is locked" not in log.lower()
        assert not re.findall(r"^\S+ (ERROR|CRITICAL) .*$", log, re.MULTILINE)
        done = Counter(job_id for job_id, _, _ in await executions(db))
        assert len(done) == JOBS and set(done.values()) == {1}
        await check_history(db, queued_grace_s=5.0, running_grace_s=1.0)
    finally:
        await db.close()
