"""schemathesis against a real ``taskmill run`` (uvicorn, SQLite): 0 server errors, and
every 4xx carries the machine-readable error body (RELIABILITY.md S20)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from taskmill.api.schemas import MIN_INTERVAL_FLOOR
from tests.e2e.test_cli import ROOT, _env, _taskmill, free_port
from tests.plan import plan_size, sized

# No timing bounds, and minutes of CPU at the plan's size: niced beside the serial step.
pytestmark = [pytest.mark.parallel, pytest.mark.beside_serial]


@contextmanager
def _serve(directory: Path, **settings: str) -> Iterator[tuple[str, str]]:
    """``taskmill run`` on a fresh database in ``directory`` (``settings``: extra
    ``TASKMILL_*`` variables), and an admin key for it."""
    url = f"sqlite:///{directory / 'taskmill.db'}"
    port = free_port()
    env = _env(url, port) | settings
    key = subprocess.run(
        _taskmill("api-keys", "create", "--admin", "--name", "fuzz"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    with (directory / "taskmill.log").open("ab") as log:
        proc = subprocess.Popen(
            _taskmill("run", "--app", "tests.fixtures.apps:app"),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base)
            yield base, key.strip()
        finally:
            proc.kill()
            proc.wait(timeout=10)


def _wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("taskmill run did not serve /healthz within 60 s")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with _serve(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


EXAMPLES_PER_OPERATION = 40


def _check(case: Any, base: str, key: str) -> None:
    response = case.call(base_url=base, headers={"x-api-key": key})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert {"type", "message", "fields"} <= error.keys()


def _fuzz(served: tuple[str, str], total: int | None) -> int:
    """Drive each operation's hypothesis strategy (schemathesis's own pytest plugin does not
    run on pytest 9 yet); ``total`` cases spread over the operations, or 40 each."""
    base, key = served
    api_schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in api_schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 18
    cases = 0
    # Operations with few inputs (``/healthz``) run out of cases early: go round again.
    for _round in range(5):
        if total is None:
            per_operation = EXAMPLES_PER_OPERATION
        elif cases >= total:
            break
        else:
            per_operation = -(-(total - cases) // len(operations))
        cases += _fuzz_round(operations, per_operation, base, key)
        if total is None:
            break
    return cases


def _fuzz_round(operations: list[Any], per_operation: int, base: str, key: str) -> int:
    cases = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            nonlocal cases
            cases += 1
            _check(case, base, key)

        fuzz()
    return cases


@pytest.mark.slow
@plan_size
@pytest.mark.timeout(300)  # the plan's size: 80-120 s alone, more beside the parallel step
def test_api_fuzz_no_server_errors(served: tuple[str, str]) -> None:
    """S20: schemathesis cases over every operation (40 each; in the plan-size step >=
    2,000 spread over them, which is more than 40 each): 0 responses >= 500, every 4xx
    carries the machine-readable error body."""
    cases = _fuzz(served, sized(None, 2000))
    assert cases >= sized(EXAMPLES_PER_OPERATION, 2000)


def test_api_fuzz_schema_lists_every_route(served: tuple[str, str]) -> None:
    base, _ = served
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/templates/{template_id}", "/events", "/readyz"} <= set(
        paths
    )


# Issue 18 item 9: every schemathesis check (schema conformance of statuses, headers and
# bodies, positive and negative data, missing auth, OPTIONS/Allow, 405s, stateful links)
# over every operation, in every phase, with bounded examples (about 40 s).
ALL_CHECKS_EXAMPLES = 10

# Rules the OpenAPI document cannot carry (a cursor's content, a time in the future), set
# for their operations only.
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def served_for_checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Its failed-authentication limit out of reach of schemathesis's missing-key probes
    (they would turn its 401s into 429s); its minimum interval the document's floor, so
    that the document's ``interval_seconds`` bounds are this server's exactly."""
    overrides = {
        "TASKMILL_API__AUTH_FAILURES_PER_MINUTE": "1000000",
        "TASKMILL_SCHEDULER__MIN_INTERVAL_SECONDS": str(MIN_INTERVAL_FLOOR),
    }
    with _serve(tmp_path_factory.mktemp("fuzz-all"), **overrides) as served:
        yield served


@pytest.mark.timeout(600)  # ~35 s alone; several times that beside other tests
def test_schemathesis_all_checks_over_every_operation(
    served_for_checks: tuple[str, str], tmp_path: Path
) -> None:
    base, key = served_for_checks
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(ALL_CHECKS_EXAMPLES),
            "--workers",
            "1",
            "--continue-on-failure",
            "--seed",
            "18",
            "-H",
            f"x-api-key: {key}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-20000:]
