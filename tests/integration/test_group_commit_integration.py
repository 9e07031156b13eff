"""Group commit on a real database: outcomes share transactions, a failing batch is
written one outcome at a time so one bad outcome fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from taskmill.core.errors import StoreUnavailable
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.services.group_commit import GroupCommitter
from taskmill.store.database import Database
from taskmill.store.driver import SqlStore
from taskmill.store.jobs import get_job
from taskmill.store.outcomes import Attempt, Failure, Success
from tests.store import running_job


async def test_group_commit_integration_concurrent_outcomes_all_land(
    db: Database, store: SqlStore
) -> None:
    ids = [await running_job(db) for _ in range(40)]
    committer = GroupCommitter(store)
    calls = [
        committer.succeed(Success(Attempt(i, 1, "w1"), {"n": n}))
        if n % 2 == 0
        else committer.fail(Attempt(i, 1, "w1"), Failure("boom"))
        for n, i in enumerate(ids)
    ]
    results = await asyncio.gather(*calls)
    await committer.close()
    assert results == [True] * 40
    statuses = [(await get_job(db, i, ALL_MERCHANTS)).status for i in ids]
    assert statuses == [JobStatus.SUCCEEDED, JobStatus.FAILED] * 20


async def test_group_commit_integration_a_stale_attempt_is_refused_alone(
    db: Database, store: SqlStore
) -> None:
    good, other = await running_job(db), await running_job(db)
    committer = GroupCommitter(store)
    results = await asyncio.gather(
        committer.succeed(Success(Attempt(good, 1, "w1"), None)),
        committer.succeed(Success(Attempt(other, 1, "someone-else"), None)),
        committer.fail(Attempt(other, 2, "w1"), Failure("late")),
    )
    await committer.close()
    assert list(results) == [True, False, False]
    assert (await get_job(db, other, ALL_MERCHANTS)).status is JobStatus.RUNNING


class _FailsFor(SqlStore):
    """A real store that cannot write any batch holding ``bad``'s outcome."""

    def __init__(self, db: Database, bad: str) -> None:
        super().__init__(db)
        self.bad = bad

    async def record_outcomes(
        self, successes: Sequence[Success], failures: Sequence[tuple[Attempt, Failure]]
    ) -> tuple[list[bool], list[bool]]:
        if any(s.attempt.job_id == self.bad for s in successes):
            raise StoreUnavailable("the disk is on fire")
        return await super().record_outcomes(successes, failures)


async def test_group_commit_integration_one_failure_spares_the_others(db: Database) -> None:
    good, bad = await running_job(db), await running_job(db)
    committer = GroupCommitter(_FailsFor(db, bad))
    outcomes = await asyncio.gather(
        committer.succeed(Success(Attempt(good, 1, "w1"), "ok")),
        committer.succeed(Success(Attempt(bad, 1, "w1"), "ok")),
        return_exceptions=True,
    )
    await committer.close()
    assert outcomes[0] is True
    assert isinstance(outcomes[1], StoreUnavailable)
    assert (await get_job(db, good, ALL_MERCHANTS)).status is JobStatus.SUCCEEDED
    assert (await get_job(db, bad, ALL_MERCHANTS)).status is JobStatus.RUNNING
    alone = GroupCommitter(_FailsFor(db, bad))
    with pytest.raises(StoreUnavailable):
        await alone.succeed(Success(Attempt(bad, 1, "w1"), "ok"))
    await alone.close()
