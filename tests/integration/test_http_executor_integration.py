"""The built-in ``http`` task against a real local server, run by real workers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import JobStatus, RunOutcome
from taskmill.store.schema import jobs
from tests.conftest import wait_for
from tests.integration.api_fixtures import Api, api
from tests.integration.local_http import LocalServer, serving
from tests.jobs import job_of, run_job

__all__ = ["api"]

FAST = {
    "worker": {"lease_seconds": 2.0, "heartbeat_seconds": 0.2, "shutdown_grace_seconds": 2.0},
    "scheduler": {"poll_interval_seconds": 0.05, "watcher_interval_seconds": 0.1},
    "retry": {"base_seconds": 0.0, "jitter": 0.0},
}
LOCAL = {"allowed_networks": ["127.0.0.1/32"]}


def make_app(url: str, **http: Any) -> Taskmill:
    return Taskmill(settings=load_settings("test", None, database={"url": url}, http=http, **FAST))


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with serving() as local:
        yield local


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[Taskmill]:
    application = make_app(sqlite_url, **LOCAL)
    yield application
    await application.stop()


@pytest.fixture
async def strict_app(sqlite_url: str) -> AsyncIterator[Taskmill]:
    """The default configuration: no private destination allowed."""
    application = make_app(sqlite_url)
    yield application
    await application.stop()


async def test_http_executor_integration_success_stores_result(
    app: Taskmill, server: LocalServer
) -> None:
    done = await run_job(
        app,
        "http",
        {
            "method": "POST",
            "url": server.url("/echo"),
            "headers": {"X-Request-Id": "abc"},
            "body": {"amount": 5},
        },
    )
    assert done.status is JobStatus.SUCCEEDED, done.last_error
    result = done.result
    assert result["status"] == 200 and result["truncated"] is False
    assert result["headers"]["content-type"] == "application/json; charset=utf-8"
    assert json.loads(result["body"]) == {"method": "POST", "body": '{"amount":5}'}
    [seen] = server.requests
    assert seen.headers["x-request-id"] == "abc"
    assert seen.headers["user-agent"] == "taskmill"
    assert seen.headers["content-type"] == "application/json"


async def test_http_executor_integration_string_body_and_selected_headers(
    sqlite_url: str, server: LocalServer
) -> None:
    app = make_app(sqlite_url, response_headers=["X-Test"], **LOCAL)
    try:
        done = await run_job(
            app, "http", {"method": "PUT", "url": server.url("/echo"), "body": "raw text"}
        )
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert json.loads(done.result["body"])["body"] == "raw text"
        ok = await run_job(app, "http", {"url": server.url("/ok")})
        assert ok.result["headers"] == {"x-test": "yes"}
    finally:
        await app.stop()


async def test_http_executor_integration_server_error_fails_then_retries(
    app: Taskmill, server: LocalServer
) -> None:
    done = await run_job(app, "http", {"url": server.url("/status/500")}, max_retries=1)
    assert done.status is JobStatus.FAILED and done.attempt == 2
    assert done.last_error is not None
    assert done.last_error.startswith("HttpError: HTTP 500")
    assert "boom: the database is on fire" in done.last_error
    assert len(done.last_error) < 600  # a short excerpt, not the 5 kB body
    assert [r.outcome for r in await app.runs(done.id)] == [RunOutcome.FAILED] * 2
    assert len(server.requests) == 2


async def test_http_executor_integration_huge_body_is_bounded(
    sqlite_url: str, server: LocalServer
) -> None:
    app = make_app(sqlite_url, max_response_bytes=1000, **LOCAL)
    try:
        done = await run_job(app, "http", {"url": server.url("/huge")})
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert done.result["body"] == "x" * 1000 and done.result["truncated"] is True
        await asyncio.wait_for(server.client_closed.wait(), 10)
        # The client stopped reading: far less than the 256 MiB offered ever left the server.
        assert server.huge_bytes_sent < 64 * 1024 * 1024
    finally:
        await app.stop()


async def test_http_executor_integration_request_timeout(
    app: Taskmill, server: LocalServer
) -> None:
    done = await run_job(
        app, "http", {"url": server.url("/slow"), "timeout_seconds": 0.3}, max_retries=0
    )
    assert done.status is JobStatus.FAILED
    assert done.last_error == "HttpTimedOut: request timed out after 0.3s"
    [run] = await app.runs(done.id)
    assert run.outcome is RunOutcome.TIMED_OUT
    await asyncio.wait_for(server.client_closed.wait(), 5)


async def test_http_executor_integration_job_timeout_aborts_request(
    app: Taskmill, server: LocalServer
) -> None:
    done = await run_job(app, "http", {"url": server.url("/slow")}, max_retries=0, timeout=0.3)
    assert done.status is JobStatus.FAILED
    assert done.last_error is not None and done.last_error.startswith("timed out after 0.3")
    await asyncio.wait_for(server.client_closed.wait(), 5)


async def test_http_executor_integration_cancel_aborts_request(
    app: Taskmill, server: LocalServer
) -> None:
    await app.start()
    job = await app.schedule("http", {"url": server.url("/slow")})
    await asyncio.wait_for(server.slow_started.wait(), 10)
    await app.cancel(job.id)
    # The server sees the connection closed: the request was aborted, not left hanging.
    await asyncio.wait_for(server.client_closed.wait(), 5)
    assert (await job_of(app, job.id)).status is JobStatus.CANCELLED


async def test_http_executor_integration_loopback_literal_refused_at_creation(
    strict_app: Taskmill, server: LocalServer
) -> None:
    with pytest.raises(ValidationError) as caught:
        await strict_app.schedule("http", {"url": server.url("/ok")})
    assert caught.value.field == "payload.url"
    assert "127.0.0.1 is a loopback address" in caught.value.reason
    assert await strict_app.list() == []


async def test_http_executor_integration_hostname_checked_on_connect(
    strict_app: Taskmill, server: LocalServer
) -> None:
    # "localhost" passes creation (names are not resolved then) and is refused when the
    # worker connects, because the address it resolves to is loopback: for good, since
    # another attempt would be refused the same.
    done = await run_job(
        strict_app, "http", {"url": server.url("/ok", host="localhost")}, max_retries=2
    )
    assert done.status is JobStatus.FAILED and done.attempt == 1
    assert done.last_error is not None
    assert done.last_error.startswith("ssrf_blocked: 127.0.0.1 is a loopback address")
    assert "http.allowed_networks" in done.last_error
    assert server.connections == 0  # refused before connecting


async def test_http_executor_integration_allowed_networks_admit_hostname(
    app: Taskmill, server: LocalServer
) -> None:
    done = await run_job(app, "http", {"url": server.url("/ok", host="localhost")})
    assert done.status is JobStatus.SUCCEEDED, done.last_error
    assert json.loads(done.result["body"]) == {"hello": "world"}


async def test_http_executor_integration_redirects_off_by_default(
    app: Taskmill, server: LocalServer
) -> None:
    target = server.url("/ok")
    done = await run_job(app, "http", {"url": server.url(f"/redirect?to={target}")}, max_retries=0)
    assert done.status is JobStatus.FAILED
    assert done.last_error is not None and "HTTP 302" in done.last_error
    assert len(server.requests) == 1


async def test_http_executor_integration_redirect_followed_when_enabled(
    sqlite_url: str, server: LocalServer
) -> None:
    app = make_app(sqlite_url, follow_redirects=True, **LOCAL)
    try:
        target = server.url("/ok", host="localhost")
        done = await run_job(app, "http", {"url": server.url(f"/redirect?to={target}")})
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert [r.path for r in server.requests][-1] == "/ok"
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://127.0.0.1:{port}/ok", "127.0.0.1 is a loopback address"),  # literal
        ("http://localhost:{port}/ok", "127.0.0.1 is a loopback address"),  # name
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1 is a private address"),
    ],
)
async def test_http_executor_integration_redirect_to_private_refused(
    sqlite_url: str, target: str, reason: str
) -> None:
    # The server is reachable on 127.0.0.2 only; every hop is checked again.
    async with serving("127.0.0.2") as server:
        app = make_app(sqlite_url, follow_redirects=True, allowed_networks=["127.0.0.2/32"])
        try:
            location = target.format(port=server.port)
            done = await run_job(
                app, "http", {"url": server.url(f"/redirect?to={location}")}, max_retries=2
            )
            assert done.status is JobStatus.FAILED and done.attempt == 1
            assert done.last_error is not None and done.last_error.startswith("ssrf_blocked: ")
            assert reason in done.last_error
            assert len(server.requests) == 1 and server.connections == 1
        finally:
            await app.stop()


async def test_http_executor_integration_validation_through_library(app: Taskmill) -> None:
    with pytest.raises(ValidationError) as caught:
        await app.schedule("http", {"url": "gopher://example.com/"})
    assert caught.value.field == "payload.url" and "http or https" in caught.value.reason
    with pytest.raises(ValidationError) as caught:
        await app.schedule("http", {"url": "http://example.com/", "method": "BREW"})
    assert caught.value.field == "payload.method"
    assert await app.list() == []


async def _job_rows(api: Api) -> int:
    async with api.runtime.db.read() as conn:
        count: int = (await conn.execute(select(func.count()).select_from(jobs))).scalar_one()
    return count


async def test_http_executor_integration_validation_through_api(api: Api) -> None:
    before = await _job_rows(api)
    response = await api.client.post(
        "/jobs",
        json={"task_type": "http", "payload": {"url": "http://169.254.169.254/latest/"}},
        headers=api.a,
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    [problem] = error["fields"]
    assert problem["field"] == "payload.url" and "link-local" in problem["reason"]
    assert await _job_rows(api) == before


async def test_http_workflow_worker_runs_job_to_success(
    database_url: str, server: LocalServer
) -> None:
    app = make_app(database_url, **LOCAL)
    try:
        await app.start()
        job = await app.schedule("http", {"url": server.url("/ok")})

        async def succeeded() -> bool:
            return (await job_of(app, job.id)).status is JobStatus.SUCCEEDED

        await wait_for(succeeded)
        done = await job_of(app, job.id)
        assert done.result["status"] == 200
        assert done.result["headers"]["x-test"] == "yes"
    finally:
        await app.stop()
