"""The smallest taskmill app: `taskmill run --app examples.hello:app`."""

from __future__ import annotations

from typing import Any

from taskmill import TaskContext, Taskmill

app = Taskmill()


@app.task("hello", max_retries=2, timeout=10)
async def hello(ctx: TaskContext, payload: Any) -> str:
    ctx.logger.info("hello, %s", payload)
    return f"hello, {payload}"
