"""schemathesis against a real ``taskmill run`` (uvicorn, SQLite): 0 server errors, and
every 4xx carries the machine-readable error body (RELIABILITY.md S20)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.e2e.test_cli import ROOT, _env, _taskmill, free_port, running


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``taskmill run`` on a fresh database, and an admin key for it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'taskmill.db'}"
    port = free_port()
    env = _env(url, port)
    key = (
        subprocess.run(
            _taskmill("api-keys", "create", "--admin", "--name", "fuzz"),
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        .stdout.decode()
        .strip()
    )
    with running(url, port) as _proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("taskmill run did not serve /healthz within 30 s")
            time.sleep(0.1)
        yield base, key


EXAMPLES_PER_OPERATION = 40


def _check(case: Any, base: str, key: str) -> None:
    response = case.call(base_url=base, headers={"x-api-key": key})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert {"type", "message", "fields"} <= error.keys()


def test_api_fuzz_no_server_errors(served: tuple[str, str]) -> None:
    # schemathesis's own pytest plugin does not run on pytest 9 yet, so each operation's
    # hypothesis strategy is driven directly.
    base, key = served
    api_schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 18
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            _check(case, base, key)

        fuzz()


def test_api_fuzz_schema_lists_every_route(served: tuple[str, str]) -> None:
    base, _ = served
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/templates/{template_id}", "/events", "/readyz"} <= set(
        paths
    )
