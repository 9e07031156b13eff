"""``taskmill`` as a user runs it: a subprocess, stopped with signals (STYLE.md habit 10)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from taskmill.core.jobs import Job, JobFilter, JobStatus
from taskmill.store import migrate
from taskmill.store.replay import projection_diff
from tests.conftest import wait_for
from tests.fixtures.apps import build_app

ROOT = Path(__file__).resolve().parents[2]
LEASE = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env(sqlite_url: str, api_port: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env.pop("DATABASE_URL", None)
    secret_file = Path(sqlite_url.removeprefix("sqlite:///")).with_name("taskmill.secret")
    env.update(
        TASKMILL_DATABASE__URL=sqlite_url,
        TASKMILL_API__PORT=str(api_port or free_port()),
        TASKMILL_API__SECRET_KEY_FILE=str(secret_file),
        TASKMILL_WORKER__LEASE_SECONDS=str(LEASE),
        TASKMILL_WORKER__HEARTBEAT_SECONDS="0.5",
        TASKMILL_WORKER__SHUTDOWN_GRACE_SECONDS="5",
        TASKMILL_SCHEDULER__POLL_INTERVAL_SECONDS="0.1",
        TASKMILL_SCHEDULER__WATCHER_INTERVAL_SECONDS="0.2",
        TASKMILL_RETRY__BASE_SECONDS="0",
    )
    return env


def _taskmill(*args: str) -> list[str]:
    return [sys.executable, "-c", "from taskmill.cli.main import main; main()", *args]


@contextmanager
def running(sqlite_url: str, api_port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``taskmill run`` with the fixture app; killed if the test leaves it running.

    Its output goes to ``taskmill.log`` beside the database (a pipe could fill and block).
    """
    log_path = Path(sqlite_url.removeprefix("sqlite:///")).with_name("taskmill.log")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            _taskmill("run", "--app", "tests.fixtures.apps:app"),
            cwd=ROOT,
            env=_env(sqlite_url, api_port),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _effects(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(job_id, int(attempt), int(pid)) for job_id, attempt, pid in rows]


async def _jobs(sqlite_url: str) -> list[Job]:
    app = build_app(sqlite_url)
    try:
        return await app.list(JobFilter(limit=10_000))
    finally:
        await app.stop()


async def test_run_sigterm_finishes_jobs_and_exits_zero(sqlite_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    producer = build_app(sqlite_url)
    jobs = [await producer.schedule("sleepy", {"effects": str(effects), "seconds": 0.5})]
    jobs += [await producer.schedule("sleepy", {"effects": str(effects)}) for _ in range(20)]
    await producer.stop()
    with running(sqlite_url) as proc:

        async def all_started() -> bool:
            return len(_effects(effects)) >= 1

        await wait_for(all_started, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    statuses = {j.status for j in await _jobs(sqlite_url)}
    assert JobStatus.RUNNING not in statuses
    assert JobStatus.SUCCEEDED in statuses


async def test_run_sigkill_mid_job_reruns_after_lease(sqlite_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    producer = build_app(sqlite_url)
    ids = [
        (await producer.schedule("sleepy", {"effects": str(effects), "seconds": 1.5})).id
        for _ in range(5)
    ]
    await producer.stop()
    with running(sqlite_url) as first:

        async def all_running() -> bool:
            return len(_effects(effects)) == 5

        await wait_for(all_running, timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    with running(sqlite_url) as second:

        async def all_succeeded() -> bool:
            jobs = await _jobs(sqlite_url)
            return all(j.status is JobStatus.SUCCEEDED for j in jobs)

        await wait_for(all_succeeded, timeout=LEASE + 20)
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
    jobs = {j.id: j for j in await _jobs(sqlite_url)}
    assert set(jobs) == set(ids)  # nothing lost
    assert all(j.attempt == 2 for j in jobs.values())  # each ran exactly once more
    runs_per_job = [e[0] for e in _effects(effects)]
    assert sorted(runs_per_job) == sorted(ids * 2)
    producer = build_app(sqlite_url)
    try:
        events = await producer.events(ids[0])
        assert [e.type.value for e in events].count("job.lease_expired") == 1
        assert await projection_diff((await producer.open()).db) == []
    finally:
        await producer.stop()


async def test_run_poison_job_fails_after_max_attempts(sqlite_url: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    producer = build_app(sqlite_url)
    poison = await producer.schedule("poison", {"effects": str(effects)})
    healthy = [await producer.schedule("sleepy", {"effects": str(effects)}) for _ in range(5)]
    await producer.stop()
    deaths = 0
    for _ in range(6):  # a supervisor restarting the dead executor
        with running(sqlite_url) as proc:

            async def settled() -> bool:
                # The healthy jobs too: one running when the poison killed the process lost
                # its lease with it and waits out a retry backoff after the poison failed.
                jobs = {j.id: j for j in await _jobs(sqlite_url)}
                done = jobs[poison.id].status is JobStatus.FAILED and all(
                    jobs[j.id].status is JobStatus.SUCCEEDED for j in healthy
                )
                return done or proc.poll() is not None

            await wait_for(settled, timeout=LEASE + 20)
            if proc.poll() is not None:
                deaths += 1
                continue
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            break
    jobs = {j.id: j for j in await _jobs(sqlite_url)}
    assert jobs[poison.id].status is JobStatus.FAILED
    assert jobs[poison.id].last_error == "worker_lost"
    assert jobs[poison.id].attempt == 3 and deaths == 3
    assert all(jobs[j.id].status is JobStatus.SUCCEEDED for j in healthy)


@pytest.mark.parallel
def test_run_invalid_config_exits_2_naming_key(sqlite_url: str) -> None:
    env = _env(sqlite_url) | {"TASKMILL_WORKER__CONCURRENCY": "-1"}
    done = subprocess.run(_taskmill("run"), cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"worker.concurrency" in done.stderr


@pytest.mark.parallel
def test_run_bad_app_spec_exits_2(sqlite_url: str) -> None:
    done = subprocess.run(
        _taskmill("run", "--app", "no_such_module:app"),
        cwd=ROOT,
        env=_env(sqlite_url),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2 and b"--app" in done.stderr


@pytest.mark.parallel
@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"]])
def test_db_commands_report_revision(tmp_path: Path, command: list[str]) -> None:
    env = _env(f"sqlite:///{tmp_path / 'fresh.db'}")
    if command[1] == "current":
        subprocess.run(_taskmill("db", "upgrade"), cwd=ROOT, env=env, check=True, timeout=60)
    done = subprocess.run(_taskmill(*command), cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (migrate.head_revision() or "").encode() in done.stdout


@pytest.mark.parallel
def test_queues_pause_list_resume(tmp_path: Path) -> None:
    """An operator pauses a queue from the shell, sees it listed, resumes it; a bad name
    is one line naming the argument and exit code 1."""
    env = _env(f"sqlite:///{tmp_path / 'fresh.db'}")

    def taskmill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _taskmill("queues", *args),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    paused = taskmill("pause", "reports")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("reports paused (since ") and "by cli" in paused.stdout
    listed = json.loads(taskmill("paused", "--json").stdout)
    assert [(q["name"], q["paused_by"]) for q in listed] == [("reports", "cli")]
    assert taskmill("resume", "reports").stdout == "reports resumed\n"
    bad = taskmill("pause", "no spaces")
    assert bad.returncode == 1
    assert "name" in bad.stderr and "Traceback" not in bad.stderr
