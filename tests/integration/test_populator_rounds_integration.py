"""The queue populator's rounds at a burst: small first, doubling while full, back to
small once caught up; the timer it sleeps on is the next ``run_at``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from taskmill.brokers.database import DatabaseBroker
from taskmill.services.queue_populator import FIRST_BATCH, QueuePopulator, QueuePopulatorConfig
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from taskmill.store.jobs import NewJob, create_jobs
from taskmill.testing import FrozenClock

TICK = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(database_url)
    yield database
    await database.close()


async def test_populator_rounds_integration_grow_from_a_small_first_batch(db: Database) -> None:
    due = 3 * FIRST_BATCH + 5  # rounds of FIRST_BATCH, twice that, then the 5 left
    await create_jobs(db, [NewJob("t", TICK) for _ in range(due)], actor="test", now=TICK)
    later = TICK + timedelta(seconds=30)
    await create_jobs(db, [NewJob("t", later)], actor="test", now=TICK)
    clock = FrozenClock(TICK)
    populator = QueuePopulator(
        store_for(db), DatabaseBroker(), clock, QueuePopulatorConfig(batch_size=500)
    )
    assert await populator.run_once() == FIRST_BATCH
    assert await populator.next_wake_at() == TICK  # full at its limit: again at once
    assert await populator.run_once() == 2 * FIRST_BATCH
    assert await populator.next_wake_at() == TICK
    assert await populator.run_once() == 5
    # Caught up: it sleeps until the next run_at, and the next round starts small again.
    assert await populator.next_wake_at() == later
    clock.advance(30)
    await create_jobs(
        db, [NewJob("t", later) for _ in range(2 * FIRST_BATCH)], actor="test", now=TICK
    )
    assert await populator.run_once() == FIRST_BATCH


async def test_populator_rounds_integration_never_above_the_batch_size(db: Database) -> None:
    size = FIRST_BATCH + 4  # the second round would double past it
    due = FIRST_BATCH + 2 * size + 5
    await create_jobs(db, [NewJob("t", TICK) for _ in range(due)], actor="test", now=TICK)
    config = QueuePopulatorConfig(batch_size=size)
    populator = QueuePopulator(store_for(db), DatabaseBroker(), FrozenClock(TICK), config)
    rounds = [await populator.run_once() for _ in range(5)]
    assert rounds == [FIRST_BATCH, size, size, 5, 0]
    await create_jobs(db, [NewJob("t", TICK) for _ in range(7)], actor="test", now=TICK)
    small = QueuePopulator(
        store_for(db), DatabaseBroker(), FrozenClock(TICK), QueuePopulatorConfig(batch_size=5)
    )
    assert [await small.run_once() for _ in range(3)] == [5, 2, 0]  # even the first round


async def test_populator_rounds_integration_a_round_short_of_rows_another_holds_keeps_its_size(
    postgres_url: str,
) -> None:
    """Replicas share a backlog: a round that came back short because another populator
    held some due rows (SKIP LOCKED) keeps its size while jobs are still due, instead of
    starting again at FIRST_BATCH (two populators went on in rounds of 8)."""
    db = Database.from_url(postgres_url)
    try:
        jobs = [NewJob("t", TICK) for _ in range(5 * FIRST_BATCH)]
        await create_jobs(db, jobs, actor="t", now=TICK)
        populator = QueuePopulator(
            store_for(db), DatabaseBroker(), FrozenClock(TICK), QueuePopulatorConfig()
        )
        assert await populator.run_once() == FIRST_BATCH  # full: the next is twice as big
        held = 4 * FIRST_BATCH - FIRST_BATCH // 2  # of the 4 x FIRST_BATCH left
        async with db.engine.connect() as other:  # another populator's round, in flight
            locked = await other.execute(
                text(
                    "SELECT id FROM jobs WHERE status = 'scheduled' ORDER BY run_at, id "
                    f"LIMIT {held} FOR UPDATE"
                )
            )
            assert len(locked.all()) == held
            free = 4 * FIRST_BATCH - held
            assert await populator.run_once() == free  # short of its 2 x FIRST_BATCH
            await other.rollback()
        # The held rows are free again: a round of the size reached, not FIRST_BATCH.
        assert await populator.run_once() == 2 * FIRST_BATCH
    finally:
        await db.close()
