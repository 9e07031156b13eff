"""``taskmill queues``: list queues with their depths, pause, resume and list paused
queues from the shell."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.cli.render import JsonOption, print_json, print_table, text
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.queues import QueuePause
from taskmill.runtime import Runtime
from taskmill.store.protocol import MAX_QUEUE_DEPTHS, QueueDepth

queues_cli = typer.Typer(
    rich_markup_mode="markdown",
    help="List queues with their depths; pause and resume them.",
    no_args_is_help=True,
)
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


@queues_cli.command("list")
def list_queues(
    as_json: JsonOption = False, env: EnvOption = None, config_dir: ConfigDirOption = None
) -> None:
    """List the queues that have unfinished jobs, a live worker or a pause (every
    merchant's), by name: jobs scheduled, queued and running, live workers serving it,
    and whether it is paused. At most 1,000 queues."""

    async def work(runtime: Runtime) -> tuple[list[QueueDepth], list[QueuePause]]:
        return await runtime.jobs.queue_depths(), await runtime.jobs.paused_queues()

    with errors_to_exit_codes():
        depths, pauses = with_runtime(env, config_dir, work)
    by_name = {p.name: QueueDepth(p.name) for p in pauses} | {d.name: d for d in depths}
    paused = {p.name: p for p in pauses}
    names = sorted(by_name)[:MAX_QUEUE_DEPTHS]
    if as_json:
        print_json([_queue_json(by_name[n], paused.get(n)) for n in names])
        return
    print_table(
        ["QUEUE", "SCHEDULED", "QUEUED", "RUNNING", "WORKERS", "PAUSED"],
        [
            [
                n,
                str(by_name[n].scheduled),
                str(by_name[n].queued),
                str(by_name[n].running),
                str(by_name[n].workers),
                f"since {text(paused[n].paused_at)}" if n in paused else "no",
            ]
            for n in names
        ],
    )
    if len(depths) == MAX_QUEUE_DEPTHS:
        typer.echo(f"(the first {MAX_QUEUE_DEPTHS} queues by name: there may be more)", err=True)


def _queue_json(depth: QueueDepth, pause: QueuePause | None) -> dict[str, object]:
    return {
        "name": depth.name,
        "scheduled": depth.scheduled,
        "queued": depth.queued,
        "running": depth.running,
        "workers": depth.workers,
        "paused": pause is not None,
        "paused_at": None if pause is None else pause.paused_at.isoformat(),
        "paused_by": None if pause is None else pause.paused_by,
    }
