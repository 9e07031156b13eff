"""The operator's CLI as an operator runs it: ``taskmill jobs|templates|queues|workers|
events`` in a subprocess against a database the library prepared (STYLE.md habit 10).

Each invocation starts a Python process (2-4 s), so each test runs a handful of commands
against one prepared database.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from taskmill import Taskmill
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import Job, JobStatus
from taskmill.core.queues import QueuePause
from taskmill.core.templates import Template
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob
from tests.conftest import wait_for
from tests.fixtures.apps import build_app

ROOT = Path(__file__).resolve().parents[2]
# Each subprocess imports taskmill (2-4 s alone, 8-10 s on a loaded two-core machine):
# the tests run a handful each, under a backstop wider than the suite's 120 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.parallel]


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def taskmill(url: str, tmp_path: Path, *args: str) -> Ran:
    """``taskmill ARGS`` against ``url``, as a subprocess, from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env.pop("DATABASE_URL", None)
    env.update(
        TASKMILL_DATABASE__URL=url,
        TASKMILL_API__SECRET_KEY_FILE=str(tmp_path / "taskmill.secret"),
    )
    command = [sys.executable, "-c", "from taskmill.cli.main import main; main()", *args]
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Prepared:
    succeeded: Job
    failed: Job
    delayed: Job  # in the paused queue "reports", idempotency key "nightly-1"
    template: Template  # "spring", Sundays of March at 02:30 in Europe/Berlin
    pause: QueuePause


async def prepare(url: str) -> Prepared:
    """Through the library: one job succeeded and one failed (run by an executor), one
    delayed in a paused queue, a cron template."""
    app = build_app(url)
    await app.start()
    try:
        ok = await app.schedule("sleepy", {"seconds": 0})
        bad = await app.schedule("declined", {"card": "4242"})

        async def both_done() -> bool:
            got = [await app.get(ok.id), await app.get(bad.id)]
            return [j.status for j in got if isinstance(j, Job)] == [
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
            ]

        await wait_for(both_done, timeout=30)
    finally:
        await app.stop()
    app = build_app(url)
    try:
        delayed = await app.schedule(
            "sleepy", {"seconds": 0}, delay=3600, queue="reports", idempotency_key="nightly-1"
        )
        template = await app.schedule(
            "sleepy", cron="30 2 * 3 0", timezone="Europe/Berlin", name="spring"
        )
        pause = await app.pause_queue("reports")
        ok_job, bad_job = await app.get(ok.id), await app.get(bad.id)
    finally:
        await app.stop()
    assert isinstance(ok_job, Job) and isinstance(bad_job, Job) and isinstance(delayed, Job)
    assert isinstance(template, Template)
    return Prepared(ok_job, bad_job, delayed, template, pause)


async def _job(url: str, ident: str) -> tuple[Job, list[EventType], list[str]]:
    app = Taskmill(url)
    try:
        job = await app.get(ident)
        assert isinstance(job, Job)
        events = await app.events(job.id)
        return job, [e.type for e in events], [e.actor for e in events]
    finally:
        await app.stop()


async def test_jobs_list_and_show(sqlite_url: str, tmp_path: Path) -> None:
    jobs = await prepare(sqlite_url)

    listed = await taskmill(
        sqlite_url,
        tmp_path,
        "jobs",
        "list",
        "--status",
        "failed",
        "--status",
        "succeeded",
        "--json",
    )
    assert listed.code == 0, listed.err
    rows = listed.json()
    assert [r["id"] for r in rows] == [jobs.failed.id, jobs.succeeded.id]  # newest first
    assert rows[0]["status"] == "failed" and rows[0]["last_error"] == "RuntimeError: card declined"
    assert rows[0]["created_at"] == jobs.failed.created_at.isoformat()

    by_type = await taskmill(
        sqlite_url, tmp_path, "jobs", "list", "--task-type", "sleepy", "--limit", "1", "--json"
    )
    assert [r["id"] for r in by_type.json()] == [jobs.delayed.id]

    shown = await taskmill(sqlite_url, tmp_path, "jobs", "show", "nightly-1")
    assert shown.code == 0, shown.err
    assert f"id:                    {jobs.delayed.id}" in shown.out
    assert "waiting:               queue 'reports' is paused" in shown.out
    assert "job.created" in shown.out

    detail = await taskmill(sqlite_url, tmp_path, "jobs", "show", jobs.failed.id, "--json")
    got = detail.json()
    assert got["job"]["id"] == jobs.failed.id and got["waiting_reason"] is None
    assert [(r["attempt"], r["outcome"]) for r in got["runs"]] == [(1, "failed")]
    assert [e["type"] for e in got["events"]][-2:] == ["job.started", "job.failed"]

    missing = await taskmill(sqlite_url, tmp_path, "jobs", "show", "no-such-job")
    assert (missing.code, missing.err) == (1, "taskmill: job 'no-such-job' not found\n")


async def test_jobs_cancel_and_retry(sqlite_url: str, tmp_path: Path) -> None:
    jobs = await prepare(sqlite_url)

    finished = await taskmill(sqlite_url, tmp_path, "jobs", "cancel", jobs.succeeded.id)
    assert finished.code == 1
    assert finished.err == (
        f"taskmill: job '{jobs.succeeded.id}' is succeeded: "
        "only scheduled, queued or running jobs can be cancelled\n"
    )

    retried = await taskmill(sqlite_url, tmp_path, "jobs", "retry", jobs.failed.id)
    assert retried.code == 0, retried.err
    job, types, actors = await _job(sqlite_url, jobs.failed.id)
    assert job.status is JobStatus.SCHEDULED and job.max_attempts == 2
    assert (types[-1], actors[-1]) == (EventType.JOB_RETRIED, "cli")

    cancelled = await taskmill(
        sqlite_url, tmp_path, "jobs", "cancel", "nightly-1", "--reason", "not tonight"
    )
    assert cancelled.code == 0, cancelled.err
    job, types, actors = await _job(sqlite_url, jobs.delayed.id)
    assert (job.status, job.cancel_reason) == (JobStatus.CANCELLED, "not tonight")
    assert (types[-1], actors[-1]) == (EventType.JOB_CANCELLED, "cli")


async def test_templates(sqlite_url: str, tmp_path: Path) -> None:
    jobs = await prepare(sqlite_url)
    app = build_app(sqlite_url)
    try:
        runtime = await app.open()
        store, now = runtime.store, runtime.clock.now()
        instance = NewJob("sleepy", now + timedelta(hours=1), template_id=jobs.template.id)
        fired = (await store.create_job(instance, actor="t", now=now, queue_if_due=False)).job
    finally:
        await app.stop()

    of_template = await taskmill(
        sqlite_url, tmp_path, "jobs", "list", "--template", "spring", "--json"
    )
    assert [r["id"] for r in of_template.json()] == [fired.id]
    no_template = await taskmill(sqlite_url, tmp_path, "jobs", "list", "--template", "autumn")
    assert (no_template.code, no_template.err) == (1, "taskmill: template 'autumn' not found\n")

    listed = await taskmill(sqlite_url, tmp_path, "templates", "list", "--json")
    [spring] = listed.json()
    assert (spring["id"], spring["name"], spring["timezone"]) == (
        jobs.template.id,
        "spring",
        "Europe/Berlin",
    )
    assert spring["active"] is True and spring["last_error"] is None
    assert spring["next_run_at"] == jobs.template.next_run_at.isoformat()  # type: ignore[union-attr]

    disabled = await taskmill(sqlite_url, tmp_path, "templates", "disable", "spring")
    assert disabled.code == 0 and "disabled" in disabled.out
    enabled = await taskmill(sqlite_url, tmp_path, "templates", "enable", jobs.template.id)
    assert enabled.code == 0 and "enabled, next fire" in enabled.out
    types, actors = await _template_events(sqlite_url, jobs.template.id)
    assert types[-2:] == [EventType.TEMPLATE_UPDATED, EventType.TEMPLATE_UPDATED]
    assert actors[-2:] == ["cli", "cli"]

    preview = await taskmill(
        sqlite_url, tmp_path, "templates", "preview", "spring", "--count", "5", "--json"
    )
    fires = preview.json()
    assert len(fires) == 5
    # 02:30 on the last Sunday of March does not exist in Berlin: moved to 03:00, marked.
    assert any(f["dst_affected"] for f in fires)
    assert all(f["dst_affected"] == ("T03:00:00+02:00" in f["local"]) for f in fires)


async def test_queues_and_workers(sqlite_url: str, tmp_path: Path) -> None:
    jobs = await prepare(sqlite_url)
    app = build_app(sqlite_url)
    try:
        store = (await app.open()).store
        await store.register_worker("w-ops", "ops-host", 4321, ["default", "mail"], 8, ["sleepy"])
    finally:
        await app.stop()

    queues = await taskmill(sqlite_url, tmp_path, "queues", "list", "--json")
    assert queues.json() == [
        {
            "name": "default",
            "scheduled": 0,
            "queued": 0,
            "running": 0,
            "workers": 1,
            "paused": False,
            "paused_at": None,
            "paused_by": None,
        },
        {
            "name": "mail",
            "scheduled": 0,
            "queued": 0,
            "running": 0,
            "workers": 1,
            "paused": False,
            "paused_at": None,
            "paused_by": None,
        },
        {
            "name": "reports",
            "scheduled": 1,
            "queued": 0,
            "running": 0,
            "workers": 0,
            "paused": True,
            "paused_at": jobs.pause.paused_at.isoformat(),
            "paused_by": "library",
        },
    ]

    workers = await taskmill(sqlite_url, tmp_path, "workers", "list", "--json")
    newest = workers.json()[0]
    assert (newest["id"], newest["hostname"], newest["pid"]) == ("w-ops", "ops-host", 4321)
    assert (newest["queues"], newest["concurrency"], newest["status"]) == (
        ["default", "mail"],
        8,
        "alive",
    )
    assert newest["heartbeat_age_seconds"] >= 0


async def _template_events(url: str, template_id: str) -> tuple[list[EventType], list[str]]:
    app = Taskmill(url)
    try:
        runtime = await app.open()
        flt = EventFilter(template_id=template_id)
        events = await runtime.jobs.events(ALL_MERCHANTS, flt)
        return [e.type for e in events], [e.actor for e in events]
    finally:
        await app.stop()


async def _tamper(url: str, statement: str) -> None:
    db = Database.from_url(url)
    try:
        async with db.transaction() as conn:
            await conn.execute(text(statement))
    finally:
        await db.close()


async def test_events_verify_passes_then_fails_after_tampering(
    sqlite_url: str, tmp_path: Path
) -> None:
    jobs = await prepare(sqlite_url)
    app = build_app(sqlite_url)
    try:
        await app.schedule_many("sleepy", [{"n": n} for n in range(60)])
    finally:
        await app.stop()

    clean = await taskmill(sqlite_url, tmp_path, "events", "verify", "--batch-size", "7")
    assert (clean.code, clean.out) == (0, "63 jobs verified\n"), clean.err

    await _tamper(sqlite_url, f"UPDATE jobs SET priority = 5 WHERE id = '{jobs.failed.id}'")
    one = await taskmill(sqlite_url, tmp_path, "events", "verify", "--json")
    assert one.code == 1
    assert one.json() == {
        "verified": 63,
        "difference_count": 1,
        "differences": [f"{jobs.failed.id}.priority: events=0 table=5"],
    }

    await _tamper(sqlite_url, "UPDATE jobs SET priority = 7")
    many = await taskmill(sqlite_url, tmp_path, "events", "verify")
    assert many.code == 1
    lines = many.out.splitlines()
    assert len(lines) == 50 + 2
    assert all(".priority: events=0 table=7" in line for line in lines[:50])
    assert lines[50:] == [
        "... and 13 more differences",
        "63 differences between the event log and the jobs table",
    ]


async def test_operator_cli_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    jobs = await prepare(postgres_url)

    listed = await taskmill(postgres_url, tmp_path, "jobs", "list", "--json")
    assert listed.code == 0, listed.err
    assert [r["id"] for r in listed.json()] == [
        jobs.delayed.id,
        jobs.failed.id,
        jobs.succeeded.id,
    ]

    clean = await taskmill(postgres_url, tmp_path, "events", "verify")
    assert (clean.code, clean.out) == (0, "3 jobs verified\n"), clean.err

    await _tamper(
        postgres_url, f"UPDATE jobs SET queue = 'elsewhere' WHERE id = '{jobs.delayed.id}'"
    )
    tampered = await taskmill(postgres_url, tmp_path, "events", "verify")
    assert tampered.code == 1
    assert tampered.out.splitlines() == [
        f"{jobs.delayed.id}.queue: events='reports' table='elsewhere'",
        "1 difference between the event log and the jobs table",
    ]
