"""Process jobs through a real worker on SQLite: real programs, real process groups.

The key property: a timed-out, cancelled or shut-down run leaves no process of its group
alive and no zombie behind, even when the program started grandchildren.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import Job, JobStatus, RunOutcome
from taskmill.executors.process import ProcessExecutorConfig, process_task
from taskmill.executors.process_groups import GroupRecords
from taskmill.store.schema import jobs as jobs_table
from taskmill.testing import run_until_idle
from tests.conftest import wait_for
from tests.integration.api_fixtures import api_client
from tests.jobs import job_of, run_job

log = logging.getLogger(__name__)
SH = "/bin/sh"
ENV = "/usr/bin/env"
MAX_OUTPUT = 4096
# Two grandchildren, then the group leader's pid (its group id) written to "$1/<pid>".
SPAWN_AND_WAIT = 'sleep 60 & sleep 60 & echo $$ > "$1/$$"; wait'


def _settings(url: str, tmp_path: Path, **process: Any) -> Any:
    return load_settings(
        "test",
        None,
        database={"url": url},
        worker={
            "concurrency": 20,
            "lease_seconds": 2.0,
            "heartbeat_seconds": 0.2,
            "shutdown_grace_seconds": 0.2,
        },
        scheduler={"poll_interval_seconds": 0.05, "watcher_interval_seconds": 0.1},
        retry={"base_seconds": 0.0, "jitter": 0.0},
        tasks={"max_retries": 0},
        api={"secret_key_file": str(tmp_path / "secret")},
        process={
            "enabled": True,
            "allowed_programs": [SH, ENV],
            "max_output_bytes": MAX_OUTPUT,
            "kill_grace_seconds": 1.0,
            "allowed_env": ["GREETING"],
            **process,
        },
    )


@pytest.fixture
async def app(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Taskmill]:
    application = Taskmill(settings=_settings(sqlite_url, tmp_path))
    yield application
    await application.stop()


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    """Where each run's shell writes its pid (= its process group id)."""
    directory = tmp_path / "pids"
    directory.mkdir()
    return directory


def _scan(groups: set[int]) -> tuple[list[int], list[int]]:
    """(survivors, zombies): live and unreaped processes in ``groups``. Only those: under
    pytest-xdist this process also holds other tests' children (a run saw nine zombies
    of other tests here)."""
    survivors: list[int] = []
    zombies: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) in groups:
            (zombies if state == "Z" else survivors).append(int(entry))
    return survivors, zombies


def _groups(pid_dir: Path) -> set[int]:
    return {int(p.name) for p in pid_dir.iterdir()}


async def test_process_integration_success_captures_output(app: Taskmill) -> None:
    done = await run_job(app, "process", {"argv": [SH, "-c", "echo hello; echo careful >&2"]})
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == {
        "exit_code": 0,
        "stdout": "hello\n",
        "stderr": "careful\n",
        "truncated_stdout": False,
        "truncated_stderr": False,
    }


async def test_process_integration_nonzero_exit_fails_with_code(app: Taskmill) -> None:
    script = "echo 'disk full' >&2; exit 3"
    done = await run_job(app, "process", {"argv": [SH, "-c", script]}, max_retries=1)
    assert done.status is JobStatus.FAILED and done.attempt == 2  # retried by the policy
    assert done.last_error == "ProcessFailed: exit code 3; stderr: disk full\n"


async def test_process_integration_output_bounded(app: Taskmill) -> None:
    """S28: 100 MiB on stdout; the pipes are drained (no hang), at most MAX_OUTPUT (far
    under the plan's 1 MiB) is stored, with the truncated flag."""
    hundred_mib = 100 * 1024 * 1024
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    script = f"yes 0123456789 | head -c {hundred_mib}; echo end >&2"
    done = await run_job(app, "process", {"argv": [SH, "-c", script]})
    elapsed = time.monotonic() - started
    assert done.status is JobStatus.SUCCEEDED and isinstance(done.result, dict)
    stdout = done.result["stdout"]
    assert done.result["truncated_stdout"] and not done.result["truncated_stderr"]
    head, tail = stdout.split(" bytes omitted ...]\n")
    assert head.startswith("0123456789\n") and set(tail) <= set("0123456789\n")
    assert f"{hundred_mib - MAX_OUTPUT} bytes omitted" in stdout
    assert len(stdout) < MAX_OUTPUT + 100 <= 1024 * 1024
    # ru_maxrss is in KiB: buffering the output would have raised the peak by 100 MiB.
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 25
    log.info("100 MiB of output in %.2fs, peak RSS grew %.1f MiB", elapsed, grown_mib)


async def test_process_integration_env_does_not_leak(
    app: Taskmill, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S29: none of the worker's variables (DATABASE_URL, REDIS_URL, AMQP_URL, TASKMILL_*)
    reaches the child: its environment is exactly the base plus the payload's env."""
    monkeypatch.setenv("PROCESS_TEST_SECRET", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db/prod")
    monkeypatch.setenv("REDIS_URL", "redis://:secret@cache:6379/0")
    monkeypatch.setenv("AMQP_URL", "amqp://app:secret@mq:5672/")
    monkeypatch.setenv("TASKMILL_API__SECRET_KEY", "k" * 40)
    done = await run_job(app, "process", {"argv": [ENV], "env": {"GREETING": "hi"}})
    assert isinstance(done.result, dict)
    seen = dict(line.split("=", 1) for line in done.result["stdout"].splitlines())
    assert seen == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "GREETING": "hi"}
    assert "hunter2" not in done.result["stdout"]


async def test_process_integration_cwd_honoured(app: Taskmill, tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here")
    real = await asyncio.to_thread(os.path.realpath, tmp_path)
    done = await run_job(
        app, "process", {"argv": [SH, "-c", "pwd; cat marker.txt"], "cwd": str(tmp_path)}
    )
    assert isinstance(done.result, dict)
    assert done.result["stdout"] == f"{real}\nhere"


async def test_process_integration_program_not_allowed_refused(app: Taskmill) -> None:
    with pytest.raises(ValidationError) as err:
        await app.schedule("process", {"argv": ["/bin/bash", "-c", "id"]})
    assert err.value.field == "payload.argv" and "not allowed" in err.value.reason
    assert await app.list() == []


async def test_process_integration_api_refuses_program_with_422(app: Taskmill) -> None:
    runtime = await app.open()
    async with api_client(app) as (client, headers):
        for argv in (["/bin/bash", "-c", "id"], ["../../../bin/sh"], "/bin/sh -c id"):
            body = {"task_type": "process", "payload": {"argv": argv}}
            response = await client.post("/jobs", json=body, headers=headers)
            assert response.status_code == 422, response.text
            [problem] = response.json()["error"]["fields"]
            assert problem["field"] == "payload.argv"
        async with runtime.db.read() as conn:
            count = await conn.execute(select(func.count()).select_from(jobs_table))
            assert count.scalar_one() == 0  # nothing written
        body = {"task_type": "process", "payload": {"argv": [SH, "-c", "true"]}}
        assert (await client.post("/jobs", json=body, headers=headers)).status_code == 201


async def test_process_integration_disabled_by_default(sqlite_url: str, tmp_path: Path) -> None:
    """S29: with the default settings a process job is refused at creation, through the
    library and with a 422 from the API, naming the setting that is off."""
    app = Taskmill(settings=load_settings("test", None, database={"url": sqlite_url}))
    try:
        with pytest.raises(ValidationError) as err:
            await app.schedule("process", {"argv": [SH, "-c", "true"]})
        assert err.value.field == "task_type"
        assert err.value.reason.startswith("executor_disabled: the built-in 'process' task")
        assert "process.enabled is false" in err.value.reason
        async with api_client(app) as (client, headers):
            body = {"task_type": "process", "payload": {"argv": [SH, "-c", "true"]}}
            response = await client.post("/jobs", json=body, headers=headers)
            assert response.status_code == 422, response.text
            [problem] = response.json()["error"]["fields"]
            assert problem["field"] == "task_type"
            assert problem["reason"].startswith("executor_disabled")
        assert await app.list() == []
    finally:
        await app.stop()


ECHO = "/bin/echo"
# Shell syntax that must reach the program as plain text (S29).
INJECTIONS = ["; rm -rf /", "$(id)", "`id`", "a\nb; id", "&& reboot", "| cat /etc/passwd"]


@pytest.fixture
async def echo_app(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Taskmill]:
    """Only /bin/echo allowed: /bin/sh is not."""
    application = Taskmill(settings=_settings(sqlite_url, tmp_path, allowed_programs=[ECHO]))
    yield application
    await application.stop()


async def test_process_integration_s29_programs_refused_at_creation(echo_app: Taskmill) -> None:
    """S29: not allow-listed, relative, ``../../bin/sh``, ``/bin/sh -c`` (sh not listed),
    a bare ``sh`` found on PATH, a command string: all 422 naming payload.argv, 0 rows."""
    async with api_client(echo_app) as (client, headers):
        for argv in (
            ["/bin/bash", "-c", "id"],
            ["bin/sh"],
            ["../../bin/sh", "-c", "id"],
            ["./echo", "hi"],
            [SH, "-c", "id"],
            ["sh", "-c", "id"],
            "/bin/sh -c id",
            "/bin/echo hi",
        ):
            body = {"task_type": "process", "payload": {"argv": argv}}
            response = await client.post("/jobs", json=body, headers=headers)
            assert response.status_code == 422, (argv, response.text)
            [problem] = response.json()["error"]["fields"]
            assert problem["field"] == "payload.argv", argv
    assert await echo_app.list() == []


async def test_process_integration_s29_shell_syntax_printed_literally(echo_app: Taskmill) -> None:
    done = await run_job(echo_app, "process", {"argv": [ECHO, *INJECTIONS]})
    assert done.status is JobStatus.SUCCEEDED and isinstance(done.result, dict)
    assert done.result["exit_code"] == 0
    assert done.result["stdout"] == " ".join(INJECTIONS) + "\n"  # output == input


PRINTF = "/usr/bin/printf"  # GNU: honours "--", and "--help" alone prints its usage


async def test_process_integration_s29_dash_arguments_after_end_of_options(
    sqlite_url: str, tmp_path: Path
) -> None:
    """S29: printf marked operands-only runs as ``printf -- …``: ``--help`` and ``-rf``
    are printed, not obeyed. The control, printf allow-listed but not marked, obeys
    ``--help`` (prints its usage): what the marking prevents."""
    marked = _settings(
        sqlite_url, tmp_path, allowed_programs=[PRINTF], operands_only_programs=[PRINTF]
    )
    app = Taskmill(settings=marked)
    try:
        done = await run_job(app, "process", {"argv": [PRINTF, "--help"]})
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert done.result["stdout"] == "--help"
        argv = [PRINTF, "%s|", "-rf", "--version", "--", "-"]
        done = await run_job(app, "process", {"argv": argv})
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert done.result["stdout"] == "-rf|--version|--|-|"
    finally:
        await app.stop()
    app = Taskmill(settings=_settings(sqlite_url, tmp_path, allowed_programs=[PRINTF]))
    try:
        done = await run_job(app, "process", {"argv": [PRINTF, "--help"]})
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert done.result["stdout"].startswith(f"Usage: {PRINTF} FORMAT")
    finally:
        await app.stop()


@pytest.mark.slow
async def test_process_integration_timeouts_leave_no_process(app: Taskmill, pid_dir: Path) -> None:
    payload = {"argv": [SH, "-c", SPAWN_AND_WAIT, "sh", str(pid_dir)], "timeout_seconds": 0.5}
    started = time.monotonic()
    jobs = await app.schedule_many("process", [payload] * 100)
    await run_until_idle(app)
    elapsed = time.monotonic() - started
    for job in jobs:
        done = await job_of(app, job.id)
        assert done.status is JobStatus.FAILED
        assert (done.last_error or "").startswith("ProcessTimedOut: timed out after 0.5s")
    [run] = await app.runs(jobs[0].id)
    assert run.outcome is RunOutcome.TIMED_OUT  # the program's own timeout, not a crash
    groups = _groups(pid_dir)
    assert len(groups) == 100  # every leader got as far as starting its grandchildren
    survivors, zombies = _scan(groups)
    log.info(
        "100 timed-out runs in %.2fs: %d survivors, %d zombies",
        elapsed,
        len(survivors),
        len(zombies),
    )
    assert (survivors, zombies) == ([], [])


async def test_process_integration_timeout_fails_within_two_seconds(
    app: Taskmill, pid_dir: Path
) -> None:
    """S28: a 1 s timeout on a program whose grandchildren sleep 300 s: the job is failed
    (outcome timed_out) within timeout + 2 s, and nothing of its group survives."""
    script = SPAWN_AND_WAIT.replace("60", "300")
    payload = {"argv": [SH, "-c", script, "sh", str(pid_dir)], "timeout_seconds": 1}
    done = await run_job(app, "process", payload)
    assert done.status is JobStatus.FAILED
    assert (done.last_error or "").startswith("ProcessTimedOut: timed out after 1s")
    [run] = await app.runs(done.id)
    assert run.outcome is RunOutcome.TIMED_OUT and run.finished_at is not None
    took = (run.finished_at - run.started_at).total_seconds()
    assert took <= 1 + 2, took
    assert _scan(_groups(pid_dir)) == ([], [])
    log.info("1 s timeout: failed %.2fs after the run started", took)


async def test_process_integration_job_timeout_kills_group(app: Taskmill, pid_dir: Path) -> None:
    """The worker's own deadline (the job's timeout) cancels the handler: same cleanup."""
    payload = {"argv": [SH, "-c", SPAWN_AND_WAIT, "sh", str(pid_dir)]}
    jobs = [await app.schedule("process", payload, timeout=0.5) for _ in range(20)]
    await run_until_idle(app)
    for job in jobs:
        assert (await job_of(app, job.id)).last_error == "timed out after 0.5s"
        [run] = await app.runs(job.id)
        assert run.outcome is RunOutcome.TIMED_OUT
    groups = _groups(pid_dir)
    assert len(groups) == 20
    assert _scan(groups) == ([], [])


async def _running_spawner(app: Taskmill, pid_dir: Path) -> tuple[Job, set[int]]:
    """Start the services and a job; return once its shell has started both sleeps."""
    await app.start()
    job = await app.schedule("process", {"argv": [SH, "-c", SPAWN_AND_WAIT, "sh", str(pid_dir)]})
    assert isinstance(job, Job)
    await wait_for(lambda: _true(any(pid_dir.iterdir())))
    groups = _groups(pid_dir)
    survivors, _ = _scan(groups)
    assert len(survivors) == 3  # the shell and its two sleeps
    return job, groups


async def test_process_integration_cancel_kills_group(app: Taskmill, pid_dir: Path) -> None:
    job, groups = await _running_spawner(app, pid_dir)
    await app.cancel(job.id, "no longer needed")
    await wait_for(lambda: _true(_scan(groups) == ([], [])))
    assert (await job_of(app, job.id)).status is JobStatus.CANCELLED


async def test_process_integration_shutdown_kills_group(app: Taskmill, pid_dir: Path) -> None:
    job, groups = await _running_spawner(app, pid_dir)
    await app.stop()  # grace 0.2 s, then the run is cancelled
    assert _scan(groups) == ([], [])  # already gone when stop() returns
    await app.open()
    assert (await job_of(app, job.id)).status is JobStatus.SCHEDULED  # released


async def test_process_integration_leftover_background_killed(app: Taskmill, pid_dir: Path) -> None:
    """A program that exits leaving a child in its group: the child is stopped too, and
    its hold on the pipes does not keep the job running."""
    script = 'sleep 60 & echo $$ > "$1/$$"; echo started'
    started = time.monotonic()
    done = await run_job(app, "process", {"argv": [SH, "-c", script, "sh", str(pid_dir)]})
    assert time.monotonic() - started < 10
    assert done.status is JobStatus.SUCCEEDED and isinstance(done.result, dict)
    assert done.result["stdout"] == "started\n"
    assert _scan(_groups(pid_dir)) == ([], [])


async def _true(value: bool) -> bool:
    return value


def test_process_integration_group_records_sweep_kills_only_dead_workers_groups(
    tmp_path: Path,
) -> None:
    """The records behind S28's executor-SIGKILL case: a group recorded by a worker that
    no longer exists is killed; one recorded by a live worker (this process) is not."""
    records = GroupRecords.open(str(tmp_path / "run"))
    assert records is not None
    orphaned = subprocess.Popen([SH, "-c", "sleep 300 & wait"], start_new_session=True)
    ours = subprocess.Popen([SH, "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()  # a worker pid that no longer exists
        leader_ticks = Path(f"/proc/{orphaned.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (records.directory / str(orphaned.pid)).write_text(f"{dead.pid} 1 {leader_ticks}\n")
        records.add(ours.pid)
        assert records.sweep() == [orphaned.pid]
        assert orphaned.wait(timeout=5) == -signal.SIGKILL
        assert ours.poll() is None and (records.directory / str(ours.pid)).exists()
        assert not (records.directory / str(orphaned.pid)).exists()
    finally:
        for proc in (orphaned, ours):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_process_integration_group_records_refuse_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could plant a record naming a group of ours
    assert GroupRecords.open(str(shared)) is None
    assert GroupRecords.open(str(tmp_path / "private")) is not None
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


def test_process_integration_only_a_starting_worker_sweeps(tmp_path: Path) -> None:
    """Building the task type (in an API or failure-watcher process too) kills nothing;
    the sweep is the worker's, when it starts (``on_worker_start``)."""
    run_dir = tmp_path / "run"
    records = GroupRecords.open(str(run_dir))
    assert records is not None
    orphaned = subprocess.Popen([SH, "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        leader_ticks = Path(f"/proc/{orphaned.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (run_dir / str(orphaned.pid)).write_text(f"{dead.pid} 1 {leader_ticks}\n")
        config = ProcessExecutorConfig(allowed_programs=(SH,), run_dir=str(run_dir))
        definition = process_task(config)
        assert orphaned.poll() is None  # built, not started: nothing killed
        assert definition.on_worker_start is not None
        definition.on_worker_start()
        assert orphaned.wait(timeout=5) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphaned.pid, signal.SIGKILL)
        orphaned.wait()
