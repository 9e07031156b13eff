"""``taskmill prune`` as an operator runs it: a dry run, the prune, a bad age."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from taskmill.core.jobs import JobStatus
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.schema import jobs
from tests.e2e.test_cli import ROOT, _env, _taskmill
from tests.store import finished

pytestmark = pytest.mark.parallel  # no timing bounds: runs in the parallel step


async def _jobs(url: str) -> set[str]:
    db = Database.from_url(url)
    try:
        async with db.read() as conn:
            return set((await conn.execute(select(jobs.c.id))).scalars())
    finally:
        await db.close()


def _prune(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _taskmill("prune", *args),
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_prune_dry_run_then_prune_then_bad_age(sqlite_url: str, tmp_path: Path) -> None:
    db = Database.from_url(sqlite_url)
    store = store_for(db)
    now = datetime.now(UTC)
    try:
        old = {
            await finished(store, JobStatus.SUCCEEDED, now - timedelta(days=8)) for _ in range(3)
        }
        young = await finished(store, JobStatus.SUCCEEDED, now - timedelta(hours=2))
    finally:
        await db.close()

    dry = _prune(sqlite_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would prune ") and "jobs 3, job_runs 3," in dry.stdout
    assert await _jobs(sqlite_url) == old | {young}

    done = _prune(sqlite_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned ") and "jobs 3, job_runs 3," in done.stdout
    assert "pruning" in done.stderr  # the progress bar, on stderr
    assert await _jobs(sqlite_url) == {young}

    bad = _prune(sqlite_url, "--older-than", "2 weeks")
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "--older-than" in bad.stderr
    too_short = _prune(sqlite_url, "--older-than", "0m")
    assert too_short.returncode == 1 and "between 1m and 3650d" in too_short.stderr

    override = _prune(sqlite_url, "--older-than", "1h")
    assert override.returncode == 0, override.stderr
    assert "jobs 1," in override.stdout
    assert await _jobs(sqlite_url) == set()
