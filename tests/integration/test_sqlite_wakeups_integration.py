"""Wake-ups between processes on one SQLite file (``store/sqlite/wakeups.py``): a job
another process schedules, cancels or finishes reaches this one at once, not at its
next poll. Each app here has its own pools, writer and socket, as a process would; the
pollers are set to 30-60 s, so only a wake-up can act within the tests' waits."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import Job, JobStatus
from taskmill.store import notify
from taskmill.store.database import Database
from taskmill.store.sqlite.wakeups import WakeupSender, directory_for, listen

SLOW_POLL = 30.0


def _app(url: str, *, worker: bool) -> Taskmill:
    settings = load_settings(
        database={"url": url},
        scheduler={
            "enabled": worker,
            "poll_interval_seconds": SLOW_POLL,
            "wait_poll_seconds": 60,
            "worker_dead_after_seconds": 300,
        },
        worker={
            "enabled": worker,
            "concurrency": 10,
            "lease_seconds": 120,
            "heartbeat_seconds": 60,
        },
        api={"serve_in_run": False},
    )
    return Taskmill(settings=settings)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "not within the wait"
        await asyncio.sleep(0.05)


@pytest.fixture
async def apps(sqlite_url: str) -> Any:
    worker, producer = _app(sqlite_url, worker=True), _app(sqlite_url, worker=False)
    started: list[str] = []
    release = asyncio.Event()

    async def record(ctx: Any, payload: dict[str, Any]) -> int:
        started.append(ctx.job_id)
        if payload.get("hold"):
            try:
                await asyncio.wait_for(release.wait(), 60)
            except asyncio.CancelledError:
                started.append(f"cancelled {ctx.job_id}")
                raise
        return int(payload.get("n", 0))

    for app in (worker, producer):
        app.task("record")(record)
    assert "sqlite-wakeups" in worker.runtime.services()
    await worker.start()
    await asyncio.sleep(0.3)  # the worker's socket is bound
    try:
        yield producer, started
    finally:
        release.set()
        await worker.stop()
        await producer.stop()


async def _succeeded(app: Taskmill, ids: list[str]) -> bool:
    jobs = [await app.get(job_id) for job_id in ids]
    return all(isinstance(j, Job) and j.status is JobStatus.SUCCEEDED for j in jobs)


async def test_jobs_another_process_schedules_start_before_its_poll(apps: Any) -> None:
    producer, started = apps
    one_by_one = [(await producer.schedule("record", {"n": n})).id for n in range(20)]
    many = [job.id for job in await producer.schedule_many("record", [{"n": n} for n in range(30)])]
    await _until(lambda: _succeeded(producer, one_by_one + many))
    assert sorted(started) == sorted(one_by_one + many)


async def test_a_delayed_job_from_another_process_wakes_the_populator(apps: Any) -> None:
    producer, _ = apps
    job = await producer.schedule("record", {"n": 1}, delay=1.0)
    await _until(lambda: _succeeded(producer, [job.id]))


async def test_a_job_written_in_the_callers_transaction_wakes_the_worker(
    apps: Any, sqlite_url: str
) -> None:
    """Transactional enqueue from another process: the caller's commit wakes the
    worker's populator (the job is inserted ``scheduled``)."""
    producer, _ = apps
    engine = create_async_engine(sqlite_url.replace("sqlite://", "sqlite+aiosqlite://"))
    try:
        async with AsyncSession(engine) as session, session.begin():
            job = await producer.schedule("record", {"n": 2}, connection=session)
        await _until(lambda: _succeeded(producer, [job.id]))
    finally:
        await engine.dispose()


async def test_waiting_in_another_process_hears_the_finish(apps: Any) -> None:
    producer, _ = apps
    job = await producer.schedule("record", {"n": 3})
    finished = await asyncio.wait_for(producer.wait(job.id, timeout=60), 10)
    assert finished.status is JobStatus.SUCCEEDED and finished.result == 3


async def test_a_cancel_from_another_process_stops_the_running_job(apps: Any) -> None:
    producer, started = apps
    job = await producer.schedule("record", {"hold": True})
    await _until(lambda: _started(started, job.id))
    await producer.cancel(job.id, "not needed")

    await _until(lambda: _started(started, f"cancelled {job.id}"))
    assert (await producer.get(job.id)).status is JobStatus.CANCELLED


async def _started(started: list[str], job_id: str) -> bool:
    return job_id in started


async def test_a_rolled_back_write_wakes_nobody(sqlite_url: str) -> None:
    """Wake-ups are sent after the commit, never for a transaction rolled back."""
    directory = directory_for(sqlite_url.removeprefix("sqlite:///"))
    assert directory is not None
    heard: list[str] = []
    stop = asyncio.Event()
    listening = asyncio.create_task(
        listen(directory, notify.CHANNELS, lambda c, _p: heard.append(c), stop)
    )
    db = Database.from_url(sqlite_url)
    try:
        await asyncio.sleep(0.1)
        heard.clear()  # the start's own signal on every channel

        async def failing(conn: Any) -> None:
            await notify.notify(conn, db.dialect, notify.DUE)
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            await db.write(failing)
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await notify.notify(conn, db.dialect, notify.QUEUED)
                raise RuntimeError("rolled back")
        await asyncio.sleep(0.2)
        assert heard == []

        async with db.transaction() as conn:
            await notify.notify(conn, db.dialect, notify.TEMPLATES)
        await _until(lambda: _heard(heard, notify.TEMPLATES), timeout=5)
    finally:
        stop.set()
        await listening
        await db.close()


async def _heard(heard: list[str], channel: str) -> bool:
    return channel in heard


async def test_a_dead_process_socket_is_removed_by_the_next_sender(tmp_path: Path) -> None:
    directory = directory_for(str(tmp_path / "x.db"))
    assert directory is not None
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    stale = directory / "99999999-dead.sock"
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(stale))  # closed at the end of the block: nobody reads it any more
    sender = WakeupSender(directory)
    try:
        sender.send([(notify.DUE, "")])
    finally:
        sender.close()
    assert not stale.exists()


async def test_a_directory_open_to_others_is_not_listened_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another user could read the wake-ups (job ids of cancels) or flood them: the
    listener refuses the directory and the process polls instead."""
    directory = directory_for(str(tmp_path / "y.db"))
    assert directory is not None
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o777)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="taskmill.store.sqlite.wakeups"):
        listening = asyncio.create_task(listen(directory, notify.CHANNELS, lambda *_: None, stop))
        await asyncio.sleep(0.1)
        stop.set()
        await listening
    assert "polling instead" in caplog.text
    assert list(directory.iterdir()) == []


def test_only_a_file_has_wakeups_and_each_file_its_own_directory(tmp_path: Path) -> None:
    assert directory_for(":memory:") is None
    assert directory_for(None) is None
    first, second = directory_for(str(tmp_path / "a.db")), directory_for(str(tmp_path / "b.db"))
    assert first is not None and second is not None and first != second
    # Two spellings of one file share one directory; its sockets' names stay short.
    assert directory_for(str(tmp_path / "." / "a.db")) == first
    assert len(str(first / "4194304-0123abcd.sock")) < 100
