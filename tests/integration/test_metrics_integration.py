"""GET /metrics: counters, histograms and gauges move with the work; no secret leaks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskmill.core.errors import StoreUnavailable
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, JobStatus
from taskmill.observability.metrics import OTHER, LabelCap
from taskmill.store import stats, workers
from taskmill.store.driver import SqlStore
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import Api, api
from tests.store import finished

__all__ = ["api"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(api: Api, headers: Mapping[str, str] | None = None) -> tuple[str, Samples]:
    response = await api.client.get("/metrics", headers=headers or api.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text, parse(response.text)


async def test_metrics_integration_executor_counters_and_histograms(api: Api) -> None:
    _, before = await scrape(api)
    for payload in ("ok", "ok", "fail"):
        await api.job(api.a, payload=payload)
    await api.job(api.a, payload="fail", max_attempts=2)  # retried once, later
    await run_until_idle(api.app)
    _, after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    job = {"task_type": "echo", "merchant": DEFAULT_MERCHANT_ID}
    assert delta("taskmill_jobs_started_total", **job) == 4
    assert delta("taskmill_jobs_succeeded_total", **job) == 2
    assert delta("taskmill_jobs_failed_total", **job) == 1
    assert delta("taskmill_jobs_retried_total", **job) == 1
    assert delta("taskmill_job_start_lag_seconds_count", task_type="echo") == 4
    runs = "taskmill_job_run_duration_seconds_count"
    assert delta(runs, task_type="echo", outcome="succeeded") == 2
    assert delta(runs, task_type="echo", outcome="failed") == 2
    assert delta("taskmill_executor_busy_slots") == 0  # every slot given back
    assert value(after, "taskmill_jobs", state="scheduled") == 1  # the retry
    assert value(after, "taskmill_store_up") == 1


async def test_metrics_integration_backlog_and_heartbeats(api: Api) -> None:
    await api.job(api.a, payload="ok")
    await api.job(api.b, payload="ok", queue="bulk")
    await api.job(api.a, payload="ok", delay_seconds=600)  # not due: not in the backlog
    await workers.register(api.runtime.db, "w-metrics", "host", 1, ["default"], 4)
    api.clock.advance(42)

    _, samples = await scrape(api)
    assert value(samples, "taskmill_queue_depth", queue="default") == 1
    assert value(samples, "taskmill_queue_depth", queue="bulk") == 1
    age = value(samples, "taskmill_queue_oldest_due_job_age_seconds", queue="default")
    assert age == pytest.approx(42)
    assert value(samples, "taskmill_jobs", state="scheduled") == 3
    assert value(samples, "taskmill_workers", status="alive") == 1
    heartbeat = value(samples, "taskmill_worker_heartbeat_age_seconds", worker_id="w-metrics")
    assert 0 <= heartbeat < 30


async def test_metrics_integration_request_latency_by_route_template(api: Api) -> None:
    job = await api.job(api.a, payload="ok")
    await api.client.get(f"/jobs/{job['id']}", headers=api.a)
    await api.client.get("/no/such/path", headers=api.a)
    too_big = b'{"task_type": "' + b"x" * 2_000_000 + b'"}'
    rejected = await api.client.post(
        "/jobs", content=too_big, headers={**api.a, "content-type": "application/json"}
    )
    assert rejected.status_code == 413

    text, samples = await scrape(api)
    name = "taskmill_http_request_duration_seconds_count"
    assert value(samples, name, method="GET", route="/jobs/{job_id}", status="200") >= 1
    assert value(samples, name, method="POST", route="/jobs", status="413") >= 1
    assert value(samples, name, method="GET", route="unmatched", status="404") >= 1
    assert job["id"] not in text and "/no/such/path" not in text


async def test_metrics_integration_needs_admin_and_leaks_no_key(api: Api) -> None:
    assert (await api.client.get("/metrics")).status_code == 401
    assert (await api.client.get("/metrics", headers=api.a)).status_code == 403
    admin_key = api.admin["x-api-key"]
    text, _ = await scrape(api, {"authorization": f"Bearer {admin_key}"})
    await api.job(api.a, payload="ok")
    await run_until_idle(api.app)
    text += (await scrape(api))[0]
    for headers in (api.admin, api.a, api.b):
        secret = headers["x-api-key"]
        assert secret not in text
        assert secret.split("_")[1][:8] not in text  # nor any part of it


async def test_metrics_integration_store_down_still_serves_process_metrics(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("database unreachable")

    monkeypatch.setattr(stats, "system_stats", unavailable)
    _, samples = await scrape(api)
    assert value(samples, "taskmill_store_up") == 0
    assert ("taskmill_executor_busy_slots", frozenset()) in samples


def test_metrics_merchant_label_cardinality_is_capped() -> None:
    cap = LabelCap(2)
    assert [cap("a"), cap("b"), cap("c"), cap("a"), cap("d")] == ["a", "b", OTHER, "a", OTHER]


async def test_metrics_integration_pruned_rows_per_table(api: Api) -> None:
    store = api.runtime.store
    assert isinstance(store, SqlStore)
    text, before = await scrape(api)
    assert 'taskmill_pruned_rows_total{table="job_dependencies"}' in text  # at 0 from the start
    for _ in range(2):
        await finished(store, JobStatus.SUCCEEDED, api.clock.now() - timedelta(days=8))
    pruner = api.runtime.pruner
    pruned = await pruner.prune_all(pruner.cutoffs())
    _, after = await scrape(api)

    def delta(table: str) -> float:
        name = "taskmill_pruned_rows_total"
        return value(after, name, table=table) - value(before, name, table=table)

    assert pruned.jobs == 2
    assert delta("jobs") == 2
    assert delta("job_runs") == 2
    assert delta("events") == pruned.events > 0
