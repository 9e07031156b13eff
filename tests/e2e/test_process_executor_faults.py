"""S28's last criterion on real service processes (SQLite, database broker): SIGKILL the
executor while a process job's program and its grandchildren run; after the executor is
restarted, no process of that job's group remains within L + W.

A killed executor cannot kill anything itself: the program leads its own session, so
nothing signals it when its parent dies. The executor records each running group in
``process.run_dir`` and the restarted executor kills the groups whose recorder is dead
(``GroupRecords`` in src/taskmill/executors/process_groups.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store.database import Database
from taskmill.store.jobs import get_job
from tests.conftest import wait_for
from tests.e2e.cluster import LEASE, REQUEUE, WATCHER, cluster
from tests.history import check_history

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SH = "/bin/sh"
# Two grandchildren, then the group leader's pid (its group id) written to "$1/<pid>".
SPAWN_AND_WAIT = 'sleep 300 & sleep 300 & echo $$ > "$1/$$"; wait'
_PR_SET_CHILD_SUBREAPER = 36


def _process_env(run_dir: Path) -> dict[str, str]:
    return {
        "TASKMILL_PROCESS__ENABLED": "true",
        "TASKMILL_PROCESS__ALLOWED_PROGRAMS": json.dumps([SH]),
        "TASKMILL_PROCESS__RUN_DIR": str(run_dir),
        "TASKMILL_TASKS__MAX_RETRIES": "0",  # a lost run fails: worker_lost, no rerun
    }


def _group(pgid: int) -> tuple[list[int], list[tuple[int, int]]]:
    """(running members, zombie members as (pid, parent)) of process group ``pgid``."""
    running: list[int] = []
    zombies: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = (Path("/proc") / entry / "stat").read_text()
        except OSError:
            continue
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid:
            if state == "Z":
                zombies.append((int(entry), int(ppid)))
            else:
                running.append(int(entry))
    return running, zombies


@contextmanager
def _subreaper() -> Iterator[None]:
    """Make this test process the reaper of orphans of its children (what init does on a
    real machine), so that it can reap the killed group members reparented to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reap_ours(pgid: int) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


async def _kill_and_reap(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):
        _reap_ours(pgid)
        if not any(_group(pgid)):
            return
        await asyncio.sleep(0.02)


async def test_process_sigkilled_executor_group_killed_after_restart(
    sqlite_url: str, tmp_path: Path
) -> None:
    run_dir, pid_dir = tmp_path / "run", tmp_path / "pids"
    pid_dir.mkdir()
    producer = Taskmill(
        settings=load_settings(
            "test",
            None,
            database={"url": sqlite_url},
            api={"secret_key_file": str(tmp_path / "secret")},
            process={"enabled": True, "allowed_programs": [SH], "run_dir": str(run_dir)},
        )
    )
    try:
        job = await producer.schedule(
            "process", {"argv": [SH, "-c", SPAWN_AND_WAIT, "sh", str(pid_dir)]}, max_retries=0
        )
    finally:
        await producer.stop()
    db = Database.from_url(sqlite_url)
    env = _process_env(run_dir)
    pgid: int | None = None
    try:
        with _subreaper(), cluster(sqlite_url, "database", tmp_path) as c:
            c.start("queue-populator", **env)
            c.start("failure-watcher", **env)
            victim = c.start("executor", **env)

            async def spawned() -> bool:
                return any(pid_dir.iterdir())

            await wait_for(spawned, timeout=30)
            [pgid] = [int(p.name) for p in pid_dir.iterdir()]

            async def running_and_recorded() -> bool:
                # The shell and its two sleeps; the worker records the group just after
                # the start, so under load the record may trail the shell's pid file.
                return len(_group(pgid)[0]) == 3 and (run_dir / str(pgid)).exists()

            await wait_for(running_and_recorded, timeout=10)
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            await asyncio.sleep(0.5)
            survived = _group(pgid)[0]
            assert len(survived) == 3  # nothing stops them: the problem being solved
            restarted_at = time.monotonic()
            successor = c.start("executor", **env)

            async def group_gone() -> bool:
                _reap_ours(pgid)  # the test is their reaper (subreaper), as init would be
                running, zombies = _group(pgid)
                return not running and not zombies

            await wait_for(group_gone, timeout=LEASE + WATCHER)
            gone_in = time.monotonic() - restarted_at

            async def lost() -> bool:
                return (await get_job(db, job.id, ALL_MERCHANTS)).status is JobStatus.FAILED

            await wait_for(lost, timeout=LEASE + WATCHER + 10)
            assert successor.poll() is None
            assert not (run_dir / str(pgid)).exists()
            logs = c.logs()
        assert "killed 1 process group(s) left running by a worker that died" in logs
        done = await get_job(db, job.id, ALL_MERCHANTS)
        assert done.last_error == "worker_lost" and done.attempt == 1
        # I1-I4 (I5 counts record_effect executions; a process job records none: its one
        # run row and attempt 1 above are the execution count).
        await check_history(db, queued_grace_s=REQUEUE + WATCHER, running_grace_s=WATCHER)
        print(  # noqa: T201
            f"S28: {len(survived)} processes outlived the SIGKILLed executor; "
            f"0 left {gone_in:.2f}s after the restart"
        )
    finally:
        await db.close()
        if pgid is not None:
            await _kill_and_reap(pgid)  # a failed run must not leave zombies of ours behind
