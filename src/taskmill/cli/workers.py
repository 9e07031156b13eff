"""``taskmill workers``: the worker registry, as the failure watcher sees it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.cli.render import JsonOption, age, plain, print_json, print_table
from taskmill.runtime import Runtime
from taskmill.store.protocol import WorkerInfo

workers_cli = typer.Typer(
    rich_markup_mode="markdown",
    help="The executors' workers: who runs, where, and when it last spoke.",
    no_args_is_help=True,
)


@workers_cli.command("list")
def list_workers(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")
    ] = 100,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """List workers, the most recently started first: id, host, pid, queues, concurrency,
    status (alive, stopped, or dead: silent too long, its jobs rescued) and how long ago
    its last heartbeat was."""

    async def work(runtime: Runtime) -> tuple[list[WorkerInfo], datetime]:
        return await runtime.jobs.workers(), runtime.clock.now()

    with errors_to_exit_codes():
        found, now = with_runtime(env, config_dir, work)
    shown = sorted(found, key=lambda w: w.started_at, reverse=True)[:limit]
    if as_json:
        print_json(
            [
                plain(w) | {"heartbeat_age_seconds": (now - w.heartbeat_at).total_seconds()}
                for w in shown
            ]
        )
        return
    print_table(
        ["ID", "HOST", "PID", "QUEUES", "CONCURRENCY", "STATUS", "LAST HEARTBEAT"],
        [
            [
                w.id,
                w.hostname,
                str(w.pid),
                ",".join(w.queues),
                str(w.concurrency),
                w.status.value,
                f"{age((now - w.heartbeat_at).total_seconds())} ago",
            ]
            for w in shown
        ],
    )
