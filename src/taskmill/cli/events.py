"""``taskmill events verify``: replay the event log and compare it with the ``jobs`` table.

The comparison is ``store/replay.py``'s, in batches of job ids (keyset over ``jobs.id``
and the log's ``job_id``), each batch in one snapshot: memory holds one batch of jobs
and their events, however large the database, and jobs moving on during the check are
not reported. The first differences are printed, then how many there were.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

from taskmill.cli.common import (
    EXIT_ERROR,
    ConfigDirOption,
    EnvOption,
    errors_to_exit_codes,
    with_runtime,
)
from taskmill.cli.render import JsonOption, print_json
from taskmill.runtime import Runtime
from taskmill.store import replay

events_cli = typer.Typer(rich_markup_mode="markdown", help="The event log.", no_args_is_help=True)
SHOWN = 50


if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass(slots=True)
class Verification:
    """What a check found: jobs compared, the first differences, and how many in all."""

    checked: int = 0
    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, batch: replay.VerifiedBatch) -> None:
        self.checked += batch.checked
        self.count += len(batch.diffs)
        self.first.extend(batch.diffs[: SHOWN - len(self.first)])


def _progress() -> Progress:
    """A bar on stderr (only a terminal's: piped runs print nothing extra)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("verifying jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    )


@events_cli.command("verify")
def verify(
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            max=replay.MAX_BATCH_SIZE,
            help="Jobs compared per read (memory holds one batch and its events).",
        ),
    ] = replay.BATCH_SIZE,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Replay the event log and compare every job it rebuilds with the jobs table,
    column by column; print the differences (the first 50, then how many) and exit 1 if
    there is any, else print "N jobs verified" and exit 0."""

    async def work(runtime: Runtime) -> Verification:
        found = Verification()
        total = await replay.count_jobs(runtime.db)
        with _progress() as bar:
            task = bar.add_task("verify", total=total)
            async for batch in replay.verify_batches(runtime.db, batch_size):
                found.add(batch)
                bar.update(task, completed=found.checked)
        return found

    with errors_to_exit_codes():
        found = with_runtime(env, config_dir, work)
    if as_json:
        print_json(
            {"verified": found.checked, "difference_count": found.count, "differences": found.first}
        )
    else:
        for line in found.first:
            typer.echo(line)
        if found.count > len(found.first):
            typer.echo(f"... and {found.count - len(found.first)} more differences")
        if found.count:
            plural = "" if found.count == 1 else "s"
            typer.echo(f"{found.count} difference{plural} between the event log and the jobs table")
        else:
            typer.echo(f"{found.checked} jobs verified")
    if found.count:
        raise typer.Exit(EXIT_ERROR)
