"""The task lifecycle: a template with ``on_job_failure: disable`` is switched off when
one of its jobs fails for good; application event handlers (``@app.on_event``) get every
event after its commit, at least once, across a SIGKILL, and one failing handler call
never stops the others."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from taskmill import Event, Fail, TaskContext, Taskmill
from taskmill.config import load_settings
from taskmill.core.clock import SystemClock
from taskmill.core.errors import ValidationError
from taskmill.core.events import EventType
from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.observability import metrics
from taskmill.services.event_handlers import EventDispatcher, Subscription
from taskmill.store.protocol import Store
from taskmill.store.schema import event_cursors
from taskmill.store.templates import StoredTemplate
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _app(url: str) -> Taskmill:
    return Taskmill(
        settings=load_settings(
            "test",
            None,
            database={"url": url},
            scheduler={"poll_interval_seconds": 0.2, "min_interval_seconds": 0.5},
        )
    )


async def test_a_template_is_switched_off_when_its_job_fails_for_good(database_url: str) -> None:
    app = _app(database_url)

    @app.task("charge", max_retries=0)
    async def charge(ctx: TaskContext, payload: Any) -> None:
        raise Fail("card declined")

    strict = await app.schedule("charge", interval=1, name="strict", on_job_failure="disable")
    lenient = await app.schedule("charge", interval=1, name="lenient")
    await app.start()
    try:

        async def switched_off() -> bool:
            found = await app.get(strict.id)
            return not found.active  # type: ignore[union-attr]

        await wait_for(switched_off, timeout=20)
        stopped = await app.get(strict.id)
        assert isinstance(stopped, StoredTemplate) and stopped.last_error is not None
        assert "failed for good (on_job_failure: disable)" in stopped.last_error
        # Ticks that came before the handler switched it off ran (and failed) too: how
        # many depends on the handler's lag; the first failure is the one named.
        failed = await app.list(JobFilter(template_id=strict.id, statuses=[JobStatus.FAILED]))
        assert any(job.id in stopped.last_error for job in failed)
        waiting = await app.list(JobFilter(template_id=strict.id, statuses=[JobStatus.SCHEDULED]))
        # ``keep`` (the default) goes on firing after its jobs fail.
        assert (await app.get(lenient.id)).active  # type: ignore[union-attr]
        logged = await app.events()
        offs = [e for e in logged if e.template_id == strict.id and e.actor == "taskmill"]
        assert len(offs) == 1 and offs[0].type is EventType.TEMPLATE_UPDATED
        # Instances made ahead of their tick were withdrawn with the switch-off.
        assert all(job.run_at <= offs[0].occurred_at for job in waiting)
    finally:
        await app.stop()


async def test_bad_handler_registrations_are_refused(sqlite_url: str) -> None:
    app = _app(sqlite_url)
    with pytest.raises(ValidationError, match="types"):
        app.on_event("job.exploded")

    async def handler(event: Event) -> None:
        return None

    app.on_event("job.failed", name="alerts")(handler)
    with pytest.raises(ValidationError, match="alerts"):
        app.on_event("job.succeeded", name="alerts")(handler)


async def test_a_failing_call_is_retried_then_passed_over(database_url: str) -> None:
    """One event's handler fails every time: it is tried five times, counted, passed
    over; the other events are handled, sync handlers too."""
    app = _app(database_url)
    seen: list[str] = []
    tries: dict[str, int] = {}
    poisoned: list[str] = []

    @app.task("work")
    async def work(ctx: TaskContext, payload: Any) -> None:
        return None

    @app.on_event(EventType.JOB_SUCCEEDED, name="picky")
    async def picky(event: Event) -> None:
        assert event.job_id is not None
        tries[event.job_id] = tries.get(event.job_id, 0) + 1
        if poisoned and event.job_id == poisoned[0]:
            raise RuntimeError("this one never works")
        seen.append(event.job_id)

    @app.on_event("job.succeeded", name="threaded")
    def threaded(event: Event) -> None:  # a sync handler runs in a thread
        seen.append(f"sync:{event.job_id}")

    failures = metrics.EVENT_HANDLER_FAILURES.labels("picky")
    before = failures._value.get()
    await app.start()
    try:
        await asyncio.sleep(0.5)  # the cursors exist: they start at the log's end
        jobs = [await app.schedule("work", n) for n in range(6)]
        poisoned.append(jobs[2].id)

        async def all_seen() -> bool:
            wanted = {j.id for j in jobs if j.id != poisoned[0]}
            return wanted <= set(seen) and {f"sync:{j.id}" for j in jobs} <= set(seen)

        await wait_for(all_seen, timeout=30)
        await wait_for(lambda: _true(tries.get(poisoned[0], 0) >= 5), timeout=30)
    finally:
        await app.stop()
    assert tries[poisoned[0]] == 5
    assert failures._value.get() == before + 1


async def _true(value: bool) -> bool:
    return value


HANDLER_PROCESS = textwrap.dedent(
    """
    import sys, time
    from taskmill import Taskmill
    from taskmill.config import load_settings

    url, out = sys.argv[1], sys.argv[2]
    app = Taskmill(settings=load_settings(
        "test", None, database={"url": url}, scheduler={"poll_interval_seconds": 0.2},
        worker={"enabled": False}))

    @app.on_event("job.created", name="audit")
    def audit(event):
        time.sleep(0.05)  # a slow handler: the kill lands mid-stream
        with open(out, "a") as f:
            f.write(event.job_id + "\\n")

    app.run()  # until SIGTERM
    """
)


async def _spawn(url: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", HANDLER_PROCESS, url, str(out), cwd=ROOT
    )


def _handled(out: Path) -> set[str]:
    return set(out.read_text().split()) if out.exists() else set()


async def test_no_event_is_missed_across_a_sigkill(postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    first = await _spawn(postgres_url, out)
    producer = _app(postgres_url)

    @producer.task("noop")
    async def noop(ctx: TaskContext, payload: Any) -> None:
        return None

    try:
        db = (await producer.open()).db

        async def cursor_made() -> bool:
            async with db.read() as conn:
                return (await conn.execute(select(event_cursors.c.name))).first() is not None

        await wait_for(cursor_made, timeout=30)
        jobs = [await producer.schedule("noop", n, delay=3600) for n in range(60)]
        await wait_for(lambda: _true(len(_handled(out)) >= 5), timeout=30)
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        assert len(_handled(out)) < len(jobs)  # killed mid-stream
        second = await _spawn(postgres_url, out)
        try:
            wanted = {job.id for job in jobs}
            await wait_for(lambda: _true(wanted <= _handled(out)), timeout=40)
        finally:
            second.send_signal(signal.SIGTERM)
            await second.wait()
        assert all(isinstance(job, Job) for job in jobs)
    finally:
        if first.returncode is None:
            first.kill()
        await producer.stop()


async def test_an_idle_handler_polls_without_writing(database_url: str) -> None:
    """With nothing new in the log, a poll reads the cursor and the log's end and writes
    nothing: no lease renewal every poll interval, for each handler, in each process
    (on SQLite each was a turn of the one writer; on PostgreSQL a dead row each)."""
    app = _app(database_url)
    seen: list[str] = []

    @app.task("work")
    async def work(ctx: TaskContext, payload: Any) -> None:
        return None

    @app.on_event(EventType.JOB_SUCCEEDED, name="quiet")
    async def quiet(event: Event) -> None:
        seen.append(str(event.job_id))

    runtime = await app.open()
    await app.start()
    try:
        await asyncio.sleep(0.5)  # the cursor exists
        job = await app.schedule("work", None)
        await wait_for(lambda: _true(job.id in seen), timeout=30)

        async def cursor() -> tuple[Any, ...]:
            async with runtime.db.read() as conn:
                row = (
                    await conn.execute(select(event_cursors).where(event_cursors.c.name == "quiet"))
                ).one()
            return tuple(row)

        await asyncio.sleep(0.5)  # the last advance is done
        before = await cursor()
        await asyncio.sleep(1.5)  # seven polls at 0.2 s, nothing new
        assert await cursor() == before
        second = await app.schedule("work", None)  # and it still hands on what comes
        await wait_for(lambda: _true(second.id in seen), timeout=30)
    finally:
        await app.stop()


async def test_a_busy_poll_reads_the_log_end_once(database_url: str) -> None:
    """A poll that finds new events reads where the log ends once, not again after
    taking the lease: the cursor did not move between the two reads."""
    app = _app(database_url)
    seen: list[Event] = []

    @app.task("noop")
    async def noop(ctx: TaskContext, payload: Any) -> None:
        return None

    runtime = await app.open()
    try:
        jobs = [await app.schedule("noop", None) for _ in range(3)]
        counting = _CountingHorizon(runtime.store)
        subscription = Subscription("once", (EventType.JOB_CREATED,), seen.append)
        dispatcher = EventDispatcher(counting, SystemClock(), [subscription], holder="test")
        assert await dispatcher.run_once() == 0  # a new cursor starts at the log's end
        counting.reads = 0
        more = [await app.schedule("noop", None) for _ in range(2)]
        await asyncio.sleep(0.1)
        assert await dispatcher.run_once() == 2
        assert [event.job_id for event in seen] == [job.id for job in more]
        assert counting.reads == 1
        assert jobs  # created before the cursor: never handed on
    finally:
        await app.stop()


class _CountingHorizon:
    """The real store, counting its ``event_horizon`` reads."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads = 0

    async def event_horizon(self, after: int, *, gap_seconds: float, now: datetime) -> int:
        self.reads += 1
        return await self._store.event_horizon(after, gap_seconds=gap_seconds, now=now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
