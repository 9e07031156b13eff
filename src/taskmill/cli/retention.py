"""``taskmill prune``: delete (or count) finished jobs past their retention age now."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.core.retention import Cutoffs, PruneCounts, Retention, parse_age
from taskmill.runtime import Runtime

OlderThanOption = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        help="Prune every finished job (and deleted template's events) older than this, "
        "whatever its status: 30m, 12h, 7d (1m to 3650d). Default: the [retention] ages.",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Delete nothing: count what would go, per table.")
]


def prune(
    older_than: OlderThanOption = None,
    dry_run: DryRunOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Delete finished jobs past their retention age now (what the pruner does).

    With their runs, events and dependency rows, in batches of retention.batch_size; a
    job an unfinished job depends on stays. Progress on stderr, a summary line on stdout."""
    with errors_to_exit_codes():
        override = None if older_than is None else parse_age(older_than)

        async def work(runtime: Runtime) -> tuple[PruneCounts, float]:
            retention = runtime.settings.retention.retention()
            if override is not None:
                retention = Retention.everything_older_than(override)
            cutoffs = retention.cutoffs(runtime.clock.now())
            started = time.monotonic()
            if dry_run:
                return await runtime.pruner.count(cutoffs), 0.0
            total = await _with_progress(runtime, cutoffs)
            return total, time.monotonic() - started

        counts, seconds = with_runtime(env, config_dir, work)
    tables = ", ".join(f"{table} {rows}" for table, rows in counts.by_table().items())
    if dry_run:
        typer.echo(f"would prune {counts.total} rows: {tables} (dry run: nothing deleted)")
    else:
        typer.echo(f"pruned {counts.total} rows in {seconds:.1f} s: {tables}")


async def _with_progress(runtime: Runtime, cutoffs: Cutoffs) -> PruneCounts:
    expected = await runtime.pruner.count(cutoffs)
    with typer.progressbar(length=expected.total, label="pruning", file=sys.stderr) as bar:
        return await runtime.pruner.prune_all(cutoffs, on_batch=lambda c: bar.update(c.total))
