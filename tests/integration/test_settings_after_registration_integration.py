"""``taskmill run --app tasks:app --env production``: the module built its app, and
registered its tasks, with the settings of import time; the command line's replace them
(``cli.common.load_app``). A task registered without ``max_retries`` takes the default of
the settings in force when its jobs are scheduled, not of those at registration."""

from __future__ import annotations

from typing import Any

from taskmill import TaskContext, Taskmill
from taskmill.config import load_settings


async def test_a_tasks_default_retries_follow_settings_replaced_after_registration(
    sqlite_url: str,
) -> None:
    app = Taskmill(settings=load_settings("test", None, database={"url": sqlite_url}))

    @app.task("defaulted")
    async def defaulted(ctx: TaskContext, payload: Any) -> None:
        return None

    @app.task("explicit", max_retries=1)
    async def explicit(ctx: TaskContext, payload: Any) -> None:
        return None

    assert app.settings.tasks.max_retries == 3
    app.settings = load_settings(
        "test", None, database={"url": sqlite_url}, tasks={"max_retries": 7}
    )
    try:
        await app.open()
        assert (await app.schedule("defaulted", None)).max_attempts == 8
        assert (await app.schedule("explicit", None)).max_attempts == 2
        assert (await app.schedule("defaulted", None, max_retries=0)).max_attempts == 1
    finally:
        await app.stop()
