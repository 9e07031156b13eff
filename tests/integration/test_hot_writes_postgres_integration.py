"""PostgreSQL's hot writes.

A worker's heartbeat beside its outcome batches never deadlocks: two multi-row writes
taking the same rows in different orders deadlock, and a soak at 670 jobs/s saw
``deadlock detected`` between a heartbeat and a success batch. The renewal now skips
rows another transaction holds (``claims.renew_leases``); without that the first test
failed with ``DeadlockDetectedError`` in 3 runs of 3. Claims commit without waiting for
the WAL flush, as do the queue populator's rounds, and nothing else does (ADR 0017)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

from taskmill.store.claims import ClaimParams
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, make_job
from taskmill.store.outcomes import Attempt, Failure, Success
from taskmill.store.postgres.database import PostgresDatabase

JOBS = 400
ROUNDS = 20


async def test_heartbeats_beside_outcome_batches_never_deadlock(postgres_url: str) -> None:
    db = Database.from_url(postgres_url)
    store = store_for(db)
    try:
        now = datetime.now(UTC)
        await store.insert_jobs(
            [make_job(NewJob("t", now), now, "test", True) for _ in range(JOBS)]
        )
        claimed = await store.claim(
            ClaimParams(
                worker_id="w", limit=JOBS, lease_seconds=60, queues=["default"], task_types=["t"]
            )
        )
        held = {job.id: job.attempt for job in claimed}
        assert len(held) == JOBS
        shuffle = random.Random(7).shuffle
        for _ in range(ROUNDS):
            ending = list(held)[: JOBS // ROUNDS]
            shuffle(ending)  # a batch arrives in the order its handlers ended
            renewing = list(held.items())
            shuffle(renewing)
            successes = [Success(Attempt(i, held[i], "w"), None) for i in ending[:-2]]
            failures = [
                (Attempt(i, held[i], "w"), Failure("boom", retry_at=None)) for i in ending[-2:]
            ]
            # Concurrent, on two connections: each statement locks up to 400 rows.
            renewed, (done, failed) = await asyncio.gather(
                store.renew_leases("w", renewing, 60), store.record_outcomes(successes, failures)
            )
            assert all(done) and all(failed)
            for job_id in ending:
                del held[job_id]
            # Still running for this worker: reported owned, renewed or (held by the
            # batch at that moment) skipped until the next heartbeat.
            assert set(held) <= renewed
        assert held == {}
    finally:
        await db.close()


async def test_claims_commit_without_waiting_for_the_flush_and_nothing_else_does(
    postgres_url: str,
) -> None:
    """ADR 0017: only the claim's connections run with ``synchronous_commit = off``;
    every other write (a producer's insert, an outcome) still waits for its flush."""
    db = Database.from_url(postgres_url)
    assert isinstance(db, PostgresDatabase)
    try:
        assert {flush: await _synchronous_commit(db, flush) for flush in (True, False)} == {
            True: "on",
            False: "off",
        }
        store = store_for(db)
        now = datetime.now(UTC)
        await store.insert_jobs([make_job(NewJob("t", now), now, "test", True)])
        claimed = await store.claim(
            ClaimParams(
                worker_id="w", limit=5, lease_seconds=60, queues=["default"], task_types=["t"]
            )
        )
        assert len(claimed) == 1
    finally:
        await db.close()


async def test_the_populators_round_commits_without_waiting_for_the_flush(
    postgres_url: str,
) -> None:
    """ADR 0017, amended: queueing lost in a crash is redone by the next round, so the
    round that queues due jobs runs on the connections without the flush (made at their
    first use: a process that only queued has them), and an insert does not."""
    db = Database.from_url(postgres_url)
    assert isinstance(db, PostgresDatabase)
    try:
        store = store_for(db)
        now = datetime.now(UTC)
        await store.insert_jobs([make_job(NewJob("t", now), now, "test", False)])
        assert db._unflushed is None  # the insert waited for its flush
        queued, _ = await store.enqueue_due(
            now=datetime.now(UTC), limit=10, actor="test", merchants_in_turn=False
        )
        assert len(queued) == 1
        assert db._unflushed is not None
    finally:
        await db.close()


async def test_behind_a_transaction_pooler_every_commit_waits_for_its_flush(
    postgres_url: str,
) -> None:
    """A pooler hands each statement to any server connection: no session setting can
    be relied on, so there is no second pool and claims commit as everything else."""
    db = Database.from_url(postgres_url, transaction_pooler=True)
    assert isinstance(db, PostgresDatabase)
    try:
        assert await _synchronous_commit(db, flush=False) == "on"
    finally:
        await db.close()


async def _synchronous_commit(db: PostgresDatabase, flush: bool) -> str:
    async with db.autocommit(flush=flush) as raw:
        driver: Any = raw.driver_connection
        return str(await driver.fetchval("SHOW synchronous_commit"))
