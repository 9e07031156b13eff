"""S33: a hypothesis state machine over the store's transitions, two workers and a
watcher racing, checked against I2-I4 after every step (SQLite and PostgreSQL).

25 runs of 30 steps per backend; on PostgreSQL the plan's 200 runs of 200 steps in the
plan-size step (``TASKMILL_TEST_PLAN_SIZE=1``: ≈ 5 min; SQLite took ≈ 4.5 min more at that size,
so it stays at 25 x 30). ``TASKMILL_TEST_S33_EXAMPLES`` and ``TASKMILL_TEST_S33_STEPS`` set
other sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete

from taskmill.core.errors import InvalidTransition
from taskmill.core.jobs import JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes
from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job, get_job
from taskmill.store.schema import events, job_dependencies, job_runs, jobs, workers
from tests.history import check_invariants
from tests.plan import plan_size, sized

EXAMPLES = int(os.environ.get("TASKMILL_TEST_S33_EXAMPLES", "25"))
STEPS = int(os.environ.get("TASKMILL_TEST_S33_STEPS", "30"))
PLAN_EXAMPLES, PLAN_STEPS = sized(EXAMPLES, 200), sized(STEPS, 200)
# I2-I4 hold on an append-only log: a violation stays visible, so the 200-step runs check
# every 10th step and at the end (each check replays the whole log) instead of each step.
CHECK_EVERY = sized(1, 10)
PAST = datetime(2026, 1, 1, tzinfo=UTC)
WORKERS = ("w1", "w2")
T = TypeVar("T")


def _later() -> datetime:
    """The populator's clock: ahead of the database's, so rescued jobs are due."""
    return datetime.now(UTC) + timedelta(minutes=1)


class StoreMachine(RuleBasedStateMachine):
    """Create / enqueue / claim / heartbeat / complete / fail / release / cancel /
    lease-expire / retry, with what each worker *believes* it holds (possibly stale,
    so zombie writes happen), and races of two actors on one job."""

    url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.db = Database.from_url(self.url, pool_size=4)
        self.job_ids: list[str] = []
        self.held: dict[str, list[outcomes.Attempt]] = {w: [] for w in WORKERS}
        self.steps = 0

    def run(self, work: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await work

        return self.runner.run(wrapped())

    @initialize()
    def empty(self) -> None:
        async def wipe() -> None:
            async with self.db.transaction() as conn:
                for table in (events, job_runs, job_dependencies, jobs, workers):
                    await conn.execute(delete(table))

        self.run(wipe())

    def teardown(self) -> None:
        try:
            if self.steps % CHECK_EVERY:
                self.run(check_invariants(self.db))  # the steps since the last check
        finally:
            self.run(self.db.close())
            self.runner.close()

    # -- producers and the populator -------------------------------------------

    @rule(count=st.integers(1, 3), max_attempts=st.integers(1, 3))
    def create(self, count: int, max_attempts: int) -> None:
        for _ in range(count):
            new = NewJob("t", PAST, max_attempts=max_attempts)
            created = self.run(create_job(self.db, new, actor="producer", now=PAST))
            self.job_ids.append(created.job.id)

    @rule()
    def enqueue(self) -> None:
        self.run(claims.enqueue_due(self.db, now=_later(), limit=5, actor="populator"))

    # -- workers ---------------------------------------------------------------

    @rule(worker=st.sampled_from(WORKERS), expired=st.booleans(), limit=st.integers(1, 3))
    def claim(self, worker: str, expired: bool, limit: int) -> None:
        params = claims.ClaimParams(
            worker_id=worker,
            limit=limit,
            lease_seconds=-1.0 if expired else 60.0,  # expired: the worker "paused" at once
            queues=["default"],
            task_types=["t"],
        )
        for job in self.run(claims.claim(self.db, params)):
            assert job.status is JobStatus.RUNNING and job.worker_id == worker
            self.held[worker].append(outcomes.Attempt(job.id, job.attempt, worker))

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        held = [(a.job_id, a.attempt) for a in self.held[worker]]
        owned = self.run(claims.renew_leases(self.db, worker, held, 60.0))
        assert owned <= {job_id for job_id, _ in held}

    # Draws never depend on the database's answers (claim order, races): hypothesis
    # replays a failing example by its draws, so a rule picks "the n-th thing held",
    # modulo what is there, and does nothing when there is nothing.
    def _pick(self, worker: str, index: int) -> outcomes.Attempt | None:
        held = self.held[worker]
        return held[index % len(held)] if held else None

    @rule(worker=st.sampled_from(WORKERS), index=st.integers(0, 99))
    def complete(self, worker: str, index: int) -> None:
        attempt = self._pick(worker, index)
        if attempt is None:
            return
        before = self.run(get_job(self.db, attempt.job_id, ALL_MERCHANTS))
        done = self.run(outcomes.succeed(self.db, attempt, "ok"))
        owned = before.status is JobStatus.RUNNING and (before.worker_id, before.attempt) == (
            worker,
            attempt.attempt,
        )
        assert done == owned, "a fenced worker must change 0 rows, the owner exactly 1"
        self.held[worker].remove(attempt)

    @rule(worker=st.sampled_from(WORKERS), index=st.integers(0, 99), retry=st.booleans())
    def fail(self, worker: str, index: int, retry: bool) -> None:
        attempt = self._pick(worker, index)
        if attempt is None:
            return
        job = self.run(get_job(self.db, attempt.job_id, ALL_MERCHANTS))
        retry_at = _later() - timedelta(minutes=2) if retry else None
        if attempt.attempt >= job.max_attempts:
            retry_at = None  # as the worker decides: no attempts left
        failure = outcomes.Failure("boom", retry_at=retry_at)
        self.run(outcomes.fail(self.db, attempt, failure))
        self.held[worker].remove(attempt)

    @rule(worker=st.sampled_from(WORKERS), index=st.integers(0, 99))
    def release(self, worker: str, index: int) -> None:
        attempt = self._pick(worker, index)
        if attempt is None:
            return
        self.run(outcomes.release(self.db, attempt))
        self.held[worker].remove(attempt)

    # -- the watcher and users -------------------------------------------------

    @rule()
    def expire_leases(self) -> None:
        self.run(claims.expire_leases(self.db, limit=10, actor="watcher"))

    @rule(index=st.integers(0, 999))
    def cancel(self, index: int) -> None:
        if not self.job_ids:
            return
        job_id = self.job_ids[index % len(self.job_ids)]
        with contextlib.suppress(InvalidTransition):  # already finished
            self.run(
                outcomes.cancel(
                    self.db, job_id, reason="user", actor="user", merchant_id=ALL_MERCHANTS
                )
            )

    @rule(index=st.integers(0, 999))
    def retry_failed(self, index: int) -> None:
        if not self.job_ids:
            return
        job_id = self.job_ids[index % len(self.job_ids)]
        with contextlib.suppress(InvalidTransition):  # not failed
            self.run(
                outcomes.retry_failed(
                    self.db, job_id, actor="user", run_at=PAST, merchant_id=ALL_MERCHANTS
                )
            )

    @rule(
        worker=st.sampled_from(WORKERS),
        index=st.integers(0, 99),
        other=st.sampled_from(["expire", "cancel", "zombie"]),
    )
    def race(self, worker: str, index: int, other: str) -> None:
        """Two actors at once on one running job: its worker's outcome against the
        watcher's rescue, a user's cancel, or the other worker's zombie write."""
        attempt = self._pick(worker, index)
        if attempt is None:
            return

        async def rival() -> Any:
            if other == "expire":
                return await claims.expire_leases(self.db, limit=10, actor="watcher")
            if other == "cancel":
                try:
                    return await outcomes.cancel(
                        self.db,
                        attempt.job_id,
                        reason="race",
                        actor="user",
                        merchant_id=ALL_MERCHANTS,
                    )
                except InvalidTransition:
                    return None
            stale = outcomes.Attempt(attempt.job_id, attempt.attempt, "zombie")
            return await outcomes.fail(self.db, stale, outcomes.Failure("late"))

        async def both() -> None:
            await asyncio.gather(outcomes.succeed(self.db, attempt, "ok"), rival())

        self.run(both())
        self.held[worker].remove(attempt)

    @invariant()
    def history_holds(self) -> None:
        self.steps += 1
        if self.steps % CHECK_EVERY == 0:
            self.run(check_invariants(self.db))


def _run_machine(url: str, examples: int, steps: int) -> None:
    StoreMachine.url = url
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_reliability_s33_store_state_machine_keeps_i2_to_i4_on_sqlite(sqlite_url: str) -> None:
    """S33 on SQLite (25 runs x 30 steps): random interleavings of every store
    transition never break I2-I4."""
    _run_machine(sqlite_url, EXAMPLES, STEPS)


@plan_size
@pytest.mark.beside_serial  # minutes of CPU at the plan's size, no timing bounds
@pytest.mark.parametrize("half", ["first", "second"])
def test_reliability_s33_store_state_machine_keeps_i2_to_i4_on_postgresql(
    postgres_url: str, half: str
) -> None:
    """S33 on PostgreSQL, where the two actors' transactions really interleave: the
    plan's 200 runs x 200 steps in the plan-size step, as two halves of 100 runs (each on
    a database of its own), run one after the other beside the serial end-to-end step."""
    _run_machine(postgres_url, -(-PLAN_EXAMPLES // 2), PLAN_STEPS)


@pytest.fixture(autouse=True)
def _restore_url() -> Any:
    yield
    StoreMachine.url = ""
