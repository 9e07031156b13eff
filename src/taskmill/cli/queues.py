"""``taskmill queues``: pause, resume and list paused queues from the shell."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.queues import QueuePause
from taskmill.runtime import Runtime

queues_cli = typer.Typer(help="Pause and resume queues.", no_args_is_help=True)
ACTOR = "cli"

QueueArgument = Annotated[str, typer.Argument(help="The queue's name.")]


@queues_cli.command("pause")
def pause(name: QueueArgument, env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Pause a queue for every executor (within a second): its jobs stay queued, running
    ones finish. The pause outlives restarts until `taskmill queues resume`."""

    async def work(runtime: Runtime) -> QueuePause:
        return await runtime.jobs.pause_queue(name, merchant_id=DEFAULT_MERCHANT_ID, actor=ACTOR)

    with errors_to_exit_codes():
        paused = with_runtime(env, config_dir, work)
    typer.echo(f"{name} paused (since {paused.paused_at.isoformat()}, by {paused.paused_by})")


@queues_cli.command("resume")
def resume(name: QueueArgument, env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Resume a paused queue."""

    async def work(runtime: Runtime) -> bool:
        return await runtime.jobs.resume_queue(name, merchant_id=DEFAULT_MERCHANT_ID, actor=ACTOR)

    with errors_to_exit_codes():
        resumed = with_runtime(env, config_dir, work)
    typer.echo(f"{name} resumed" if resumed else f"{name} was not paused")


@queues_cli.command("paused")
def paused(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """List the paused queues."""

    async def work(runtime: Runtime) -> list[QueuePause]:
        return await runtime.jobs.paused_queues()

    with errors_to_exit_codes():
        found = with_runtime(env, config_dir, work)
    if as_json:
        rows = [
            {"name": p.name, "paused_at": p.paused_at.isoformat(), "paused_by": p.paused_by}
            for p in found
        ]
        typer.echo(json.dumps(rows))
        return
    for p in found:
        typer.echo(f"{p.name}  paused {p.paused_at.isoformat()}  by {p.paused_by}")
    if not found:
        typer.echo("no queue is paused")
