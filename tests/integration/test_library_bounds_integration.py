"""The library refuses out-of-bounds job options as the API does, naming the field, and
stores nothing (the API's schemas and the library share ``taskmill.core.jobs``' bounds)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from taskmill import TaskContext, Taskmill
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import JobFilter


@pytest.fixture
async def app(sqlite_url: str) -> AsyncIterator[Taskmill]:
    app = Taskmill(sqlite_url)

    @app.task("noop")
    async def noop(ctx: TaskContext, payload: Any) -> None:
        return None

    await app.open()
    yield app
    await app.stop()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 1001}, "priority"),
        ({"priority": -1001}, "priority"),
        ({"max_retries": 101}, "max_retries"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 7 * 86400 + 1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"queue": ""}, "queue"),
        ({"queue": "no spaces"}, "queue"),
        ({"queue": "q" * 101}, "queue"),
    ],
)
async def test_schedule_refuses_options_out_of_bounds(
    app: Taskmill, options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        await app.schedule("noop", {}, **options)
    assert refused.value.field == field
    with pytest.raises(ValidationError) as refused:  # a recurring schedule too
        await app.schedule("noop", {}, interval=60, name="every-minute", **options)
    assert refused.value.field == field
    assert await app.list(JobFilter()) == []


async def test_schedule_accepts_the_bounds_themselves(app: Taskmill) -> None:
    low = await app.schedule("noop", {}, priority=-1000, max_retries=0, timeout=0.001, queue="a")
    high = await app.schedule(
        "noop", {}, priority=1000, max_retries=100, timeout=7 * 86400, queue="q" * 100
    )
    assert (low.priority, low.max_attempts, low.queue) == (-1000, 1, "a")
    assert (high.priority, high.max_attempts, high.timeout_seconds) == (1000, 101, 7 * 86400)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"priority": 5000}, "priority"),
        ({"max_retries": 1000}, "max_retries"),
        ({"timeout": -1}, "timeout"),
        ({"queue": "bad queue"}, "queue"),
    ],
)
def test_task_registration_refuses_options_out_of_bounds(
    options: dict[str, Any], field: str
) -> None:
    app = Taskmill("sqlite:///unused.db")
    with pytest.raises(ValidationError) as refused:

        @app.task("bad", **options)
        async def bad(ctx: TaskContext, payload: Any) -> None:
            return None

    assert refused.value.field == field
