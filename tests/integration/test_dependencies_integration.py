"""Job dependencies on both databases: failure propagation, the ``run`` policy, refused
creations, and the API's view of upstream and downstream jobs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import Taskmill
from taskmill.core.dependencies import CASCADE_ACTOR
from taskmill.core.errors import ValidationError
from taskmill.core.events import EventFilter, EventType
from taskmill.core.jobs import DependencyFailurePolicy, Job, JobStatus
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.store import claims, outcomes, tenants
from taskmill.store.database import Database
from taskmill.store.dependencies import get_dependencies
from taskmill.store.events import list_events
from taskmill.store.jobs import NewJob, create_job, get_job
from taskmill.store.replay import projection_diff
from taskmill.store.schema import events, job_dependencies, jobs
from taskmill.testing import FrozenClock, run_until_idle
from tests.integration.api_fixtures import Api, api, build_app

__all__ = ["api"]

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RUN = DependencyFailurePolicy.RUN


def _claim(worker: str = "w1", lease: float = 30.0) -> claims.ClaimParams:
    return claims.ClaimParams(
        worker_id=worker, limit=10, lease_seconds=lease, queues=["default"], task_types=["t"]
    )


async def _new(
    db: Database,
    *depends_on: str,
    policy: DependencyFailurePolicy = DependencyFailurePolicy.CANCEL,
    merchant_id: str | None = None,
    **kw: Any,
) -> str:
    if merchant_id is not None:
        kw["merchant_id"] = merchant_id
    new = NewJob("t", NOW, depends_on=depends_on, on_dependency_failure=policy, **kw)
    return (await create_job(db, new, actor="test", now=NOW)).job.id


async def _run(db: Database, *, lease: float = 30.0) -> list[Job]:
    """Queue whatever is due and claim it, as the populator and a worker would."""
    await claims.enqueue_due(db, now=NOW, limit=10, actor="populator")
    return await claims.claim(db, _claim(lease=lease))


async def _fail(db: Database, job: Job) -> None:
    attempt = outcomes.Attempt(job.id, job.attempt, "w1")
    assert await outcomes.fail(db, attempt, outcomes.Failure("boom"))


async def _succeed(db: Database, job: Job) -> None:
    assert await outcomes.succeed(db, outcomes.Attempt(job.id, job.attempt, "w1"), "ok")


async def _status(db: Database, job_id: str) -> JobStatus:
    return (await get_job(db, job_id, ALL_MERCHANTS)).status


async def _counts(db: Database) -> list[int]:
    """How many jobs, events and dependency rows are stored."""
    async with db.read() as conn:
        return [
            (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (jobs, events, job_dependencies)
        ]


async def _cascade_events(db: Database, job_id: str) -> list[dict[str, Any]]:
    evs = await list_events(db, ALL_MERCHANTS, EventFilter(job_id=job_id))
    return [
        {"actor": e.actor, **e.data}
        for e in evs
        if e.type == EventType.JOB_CANCELLED and e.actor == CASCADE_ACTOR
    ]


async def test_dependencies_integration_chain_failure_cancels_downstream(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a)
    c = await _new(db, b)
    [job] = await _run(db)
    assert job.id == a  # b and c wait
    await _fail(db, job)
    job_b, job_c = await get_job(db, b, ALL_MERCHANTS), await get_job(db, c, ALL_MERCHANTS)
    assert job_b.status is JobStatus.CANCELLED and job_c.status is JobStatus.CANCELLED
    assert job_b.cancel_reason == f"dependency {a} failed"
    assert job_c.cancel_reason == f"dependency {b} cancelled: upstream {a} failed"
    assert job_b.finished_at is not None
    [event_b] = await _cascade_events(db, b)
    assert event_b["dependency_id"] == a and event_b["root_job_id"] == a
    assert event_b["from"] == "scheduled" and event_b["to"] == "cancelled"
    [event_c] = await _cascade_events(db, c)
    assert event_c["dependency_id"] == b and event_c["reason"] == job_c.cancel_reason
    assert await projection_diff(db) == []
    assert await claims.next_due_at(db) is None  # nothing left waiting


async def test_dependencies_integration_cancel_upstream_cancels_dependents(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a)
    await outcomes.cancel(db, a, reason="changed my mind", actor="user", merchant_id=ALL_MERCHANTS)
    job_b = await get_job(db, b, ALL_MERCHANTS)
    assert job_b.status is JobStatus.CANCELLED
    assert job_b.cancel_reason == f"dependency {a} cancelled"
    assert await projection_diff(db) == []


async def test_dependencies_integration_cancel_running_upstream_cancels_dependents(
    db: Database,
) -> None:
    a = await _new(db)
    b = await _new(db, a)
    [job] = await _run(db)
    await outcomes.cancel(db, job.id, reason="stop", actor="user", merchant_id=ALL_MERCHANTS)
    assert await _status(db, b) is JobStatus.CANCELLED


async def test_dependencies_integration_retry_scheduled_upstream_keeps_dependents(
    db: Database,
) -> None:
    a = await _new(db, max_attempts=2)
    b = await _new(db, a)
    [job] = await _run(db)
    retry = outcomes.Failure("flaky", retry_at=NOW)
    assert await outcomes.fail(db, outcomes.Attempt(a, 1, "w1"), retry)
    assert await _status(db, b) is JobStatus.SCHEDULED  # not terminal: nothing propagates
    [job] = await _run(db)
    await _succeed(db, job)
    [job] = await _run(db)
    assert job.id == b


async def test_dependencies_integration_lease_expiry_failure_cancels_dependents(
    db: Database,
) -> None:
    a = await _new(db)  # max_attempts 1: the lost attempt is its last
    b = await _new(db, a)
    await _run(db, lease=0.05)
    for _ in range(200):
        expired = await claims.expire_leases(db, limit=10, actor="watcher")
        if expired.failed:
            break
        await asyncio.sleep(0.01)
    assert [j.id for j in expired.failed] == [a]
    job_b = await get_job(db, b, ALL_MERCHANTS)
    assert job_b.status is JobStatus.CANCELLED
    assert job_b.cancel_reason == f"dependency {a} failed"
    assert await projection_diff(db) == []


async def test_dependencies_integration_run_policy_runs_after_failure(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a, policy=RUN)
    c = await _new(db, b)  # default policy, waits on b
    [job] = await _run(db)
    assert job.id == a
    assert await claims.next_due_at(db) is None  # b waits while a runs
    await _fail(db, job)
    assert await _status(db, b) is JobStatus.SCHEDULED
    assert await claims.next_due_at(db) == NOW
    [job] = await _run(db)
    assert job.id == b and (await get_job(db, b, ALL_MERCHANTS)).on_dependency_failure is RUN
    assert await _status(db, c) is JobStatus.SCHEDULED  # b has not finished
    await _succeed(db, job)
    [job] = await _run(db)
    assert job.id == c
    assert await projection_diff(db) == []


async def test_dependencies_integration_run_policy_waits_for_every_upstream(
    db: Database,
) -> None:
    a = await _new(db)
    slow = await _new(db)
    b = await _new(db, a, slow, policy=RUN)
    running = {j.id: j for j in await _run(db)}
    await _fail(db, running[a])
    assert [j.id for j in await _run(db)] == []  # slow is still running
    await outcomes.cancel(db, slow, reason="enough", actor="user", merchant_id=ALL_MERCHANTS)
    assert [j.id for j in await _run(db)] == [b]


async def test_dependencies_integration_diamond_cancels_each_once(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a)
    c = await _new(db, a)
    d = await _new(db, b, c)
    [job] = await _run(db)
    await _fail(db, job)
    assert {await _status(db, x) for x in (b, c, d)} == {JobStatus.CANCELLED}
    [event_d] = await _cascade_events(db, d)
    assert event_d["dependency_id"] == min(b, c) and event_d["root_job_id"] == a
    assert await projection_diff(db) == []


async def test_dependencies_integration_diamond_succeeds_in_order(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a)
    c = await _new(db, a)
    d = await _new(db, b, c)
    order: list[str] = []
    for _ in range(4):
        batch = await _run(db)
        order.extend(sorted(j.id for j in batch))
        for job in batch:
            await _succeed(db, job)
    assert order[0] == a and set(order[1:3]) == {b, c} and order[3] == d


async def test_dependencies_integration_one_upstream_succeeded_one_failed(db: Database) -> None:
    good = await _new(db)
    bad = await _new(db)
    cancel = await _new(db, good, bad)
    run = await _new(db, good, bad, policy=RUN)
    running = {j.id: j for j in await _run(db)}
    await _succeed(db, running[good])
    assert await _status(db, cancel) is JobStatus.SCHEDULED  # bad still running
    await _fail(db, running[bad])
    job = await get_job(db, cancel, ALL_MERCHANTS)
    assert job.status is JobStatus.CANCELLED and job.cancel_reason == f"dependency {bad} failed"
    assert [j.id for j in await _run(db)] == [run]
    assert await projection_diff(db) == []


async def test_dependencies_integration_retry_failed_leaves_dependents_cancelled(
    db: Database,
) -> None:
    a = await _new(db)
    b = await _new(db, a)
    [job] = await _run(db)
    await _fail(db, job)
    await outcomes.retry_failed(db, a, actor="user", run_at=NOW, merchant_id=ALL_MERCHANTS)
    [job] = await _run(db)
    await _succeed(db, job)
    job_b = await get_job(db, b, ALL_MERCHANTS)
    assert job_b.status is JobStatus.CANCELLED  # documented: a retry does not revive it
    assert [j.id for j in await _run(db)] == []
    assert await projection_diff(db) == []


async def test_dependencies_integration_refused_creations_leave_nothing(db: Database) -> None:
    failed = await _new(db)
    [job] = await _run(db)
    await _fail(db, job)
    other = (await tenants.create_merchant(db, "other", now=NOW)).id
    theirs = await _new(db, merchant_id=other)
    cancelled = await _new(db)
    await outcomes.cancel(db, cancelled, reason="x", actor="user", merchant_id=ALL_MERCHANTS)
    ok = await _new(db)
    before = await _counts(db)
    missing = str(uuid.uuid4())
    messages = {}
    for name, upstream in (("missing", missing), ("theirs", theirs)):
        with pytest.raises(ValidationError) as err:
            await _new(db, ok, upstream)
        assert err.value.field == "depends_on"
        messages[name] = err.value.reason.replace(upstream, "<id>")
    # Another merchant's job reads exactly like one that does not exist.
    assert messages["missing"] == messages["theirs"] == "job <id> does not exist"
    for upstream, status in ((failed, "failed"), (cancelled, "cancelled")):
        with pytest.raises(ValidationError) as err:
            await _new(db, ok, upstream)
        assert err.value.field == "depends_on"
        assert f"job {upstream} is {status}" in err.value.reason
    assert await _counts(db) == before
    # Under "run" the same upstream is accepted (and the job is due at once).
    accepted = await _new(db, failed, policy=RUN)
    assert {j.id for j in await _run(db)} == {ok, theirs, accepted}


async def test_dependencies_integration_self_dependency_refused(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids are made by the server, so a job can never name itself; even if a client
    # guessed the next id, that id does not exist yet when the dependency is checked.
    fixed = uuid.UUID("11111111-1111-4111-8111-111111111111")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)  # the module store/jobs.py uses
    before = await _counts(db)
    with pytest.raises(ValidationError) as err:
        await _new(db, str(fixed))
    assert err.value.field == "depends_on" and "does not exist" in err.value.reason
    assert await _counts(db) == before


async def test_dependencies_integration_cycles_cannot_form(db: Database) -> None:
    # A cycle needs an edge into an existing job; edges are only made with a new job.
    # Re-sending an existing job's idempotency key with depends_on returns it unchanged.
    a = await _new(db, idempotency_key="a")
    b = await _new(db, a)
    again = await create_job(
        db, NewJob("t", NOW, idempotency_key="a", depends_on=[b]), actor="test", now=NOW
    )
    assert not again.created and again.job.id == a
    assert (await get_dependencies(db, a, ALL_MERCHANTS)).upstream == []
    with pytest.raises(ValidationError) as err:  # a job that is not yet made cannot be named
        await _new(db, b, str(uuid.uuid4()))
    assert err.value.field == "depends_on"


async def test_dependencies_integration_dependencies_read_both_ways(db: Database) -> None:
    a = await _new(db)
    b = await _new(db, a, a)  # duplicates collapse
    c = await _new(db, a, b, policy=RUN)
    deps_a = await get_dependencies(db, a, ALL_MERCHANTS)
    # Oldest first, then by id (all were created at the same NOW here).
    assert deps_a.upstream == [] and [d.id for d in deps_a.downstream] == sorted([b, c])
    deps_c = await get_dependencies(db, c, ALL_MERCHANTS)
    assert [d.id for d in deps_c.upstream] == sorted([a, b]) and deps_c.downstream == []
    assert deps_c.on_dependency_failure is RUN
    assert {d.status for d in deps_c.upstream} == {JobStatus.SCHEDULED}
    assert deps_c.upstream[0].task_type == "t"


# -- through the real services ---------------------------------------------------------


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[Taskmill]:
    """The API tests' app without the API: task ``echo`` fails on payload ``"fail"``."""
    application = build_app(database_url, FrozenClock(NOW), tmp_path)
    yield application
    await application.stop()


async def test_dependencies_integration_worker_failure_cancels_chain(app: Taskmill) -> None:
    a = await app.schedule("echo", "fail")
    b = await app.schedule("echo", "b", depends_on=[a.id])
    c = await app.schedule("echo", "c", depends_on=[b.id])
    d = await app.schedule("echo", "d", depends_on=[a.id], on_dependency_failure="run")
    await run_until_idle(app)
    got = {j.id: j for j in await app.list()}
    assert got[a.id].status is JobStatus.FAILED
    assert got[b.id].status is JobStatus.CANCELLED and got[c.id].status is JobStatus.CANCELLED
    assert got[c.id].cancel_reason == f"dependency {b.id} cancelled: upstream {a.id} failed"
    assert got[d.id].status is JobStatus.SUCCEEDED and got[d.id].result == "d"
    deps = await app.dependencies(a.id)
    assert {(x.id, x.status) for x in deps.downstream} == {
        (b.id, JobStatus.CANCELLED),
        (d.id, JobStatus.SUCCEEDED),
    }
    assert await projection_diff((await app.open()).db) == []


async def test_dependencies_integration_facade_refuses_bad_policy_and_template(
    app: Taskmill,
) -> None:
    a = await app.schedule("echo", "a")
    with pytest.raises(ValidationError) as err:
        await app.schedule("echo", "b", depends_on=[a.id], on_dependency_failure="ignore")
    assert err.value.field == "on_dependency_failure"
    with pytest.raises(ValidationError) as err:
        await app.schedule("echo", "b", depends_on=[a.id], interval=60)
    assert err.value.field == "depends_on"
    assert [j.id for j in await app.list()] == [a.id]


# -- through the API -----------------------------------------------------------------


async def test_dependencies_integration_api_shows_upstream_and_downstream(api: Api) -> None:
    a = await api.job(api.a, payload="fail")
    b = await api.job(api.a, payload="b", depends_on=[a["id"]])
    c = await api.job(api.a, payload="c", depends_on=[a["id"]], on_dependency_failure="run")
    assert b["on_dependency_failure"] == "cancel" and c["on_dependency_failure"] == "run"
    got = await api.client.get(f"/jobs/{a['id']}/dependencies", headers=api.a)
    assert got.status_code == 200
    body = got.json()
    assert body["job_id"] == a["id"] and body["upstream"] == []
    assert sorted(body["downstream"], key=lambda d: d["id"] == c["id"]) == [
        {"id": b["id"], "status": "scheduled", "task_type": "echo"},
        {"id": c["id"], "status": "scheduled", "task_type": "echo"},
    ]
    await run_until_idle(api.app)
    up = (await api.client.get(f"/jobs/{b['id']}/dependencies", headers=api.a)).json()
    assert up["upstream"] == [{"id": a["id"], "status": "failed", "task_type": "echo"}]
    assert up["on_dependency_failure"] == "cancel"
    job_b = (await api.client.get(f"/jobs/{b['id']}", headers=api.a)).json()
    assert job_b["status"] == "cancelled"
    assert job_b["cancel_reason"] == f"dependency {a['id']} failed"
    job_c = (await api.client.get(f"/jobs/{c['id']}", headers=api.a)).json()
    assert job_c["status"] == "succeeded"


async def test_dependencies_integration_api_is_tenant_scoped(api: Api) -> None:
    a = await api.job(api.a)
    theirs = await api.client.get(f"/jobs/{a['id']}/dependencies", headers=api.b)
    unknown = await api.client.get(f"/jobs/{uuid.uuid4()}/dependencies", headers=api.b)
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"] == unknown.json()["error"]
    # Depending on another merchant's job answers like depending on a missing one.
    cross = await api.client.post(
        "/jobs", json={"task_type": "echo", "depends_on": [a["id"]]}, headers=api.b
    )
    missing_id = str(uuid.uuid4())
    missing = await api.client.post(
        "/jobs", json={"task_type": "echo", "depends_on": [missing_id]}, headers=api.b
    )
    assert cross.status_code == missing.status_code == 422
    assert cross.text.replace(a["id"], "<id>") == missing.text.replace(missing_id, "<id>")
    assert cross.json()["error"]["fields"][0]["field"] == "depends_on"
    listed = await api.client.get("/jobs", headers=api.b)
    assert listed.json()["items"] == []


async def test_dependencies_integration_api_refuses_bad_policy_and_failed_upstream(
    api: Api,
) -> None:
    a = await api.job(api.a, payload="fail")
    bad = await api.client.post(
        "/jobs",
        json={"task_type": "echo", "depends_on": [a["id"]], "on_dependency_failure": "maybe"},
        headers=api.a,
    )
    assert bad.status_code == 422 and "on_dependency_failure" in bad.text
    await run_until_idle(api.app)
    refused = await api.client.post(
        "/jobs", json={"task_type": "echo", "depends_on": [a["id"]]}, headers=api.a
    )
    assert refused.status_code == 422
    assert f"job {a['id']} is failed" in refused.text
    accepted = await api.job(api.a, depends_on=[a["id"]], on_dependency_failure="run")
    assert accepted["status"] == "scheduled"
