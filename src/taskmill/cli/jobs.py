"""``taskmill jobs``: list, show, cancel and retry jobs from the shell.

The operator's door, like the library: it reads every merchant's jobs
(``ALL_MERCHANTS``), finds names (template names, idempotency keys) among the default
merchant's, and records ``cli`` as the actor of what it changes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.cli.render import JsonOption, plain, print_fields, print_json, print_table, text
from taskmill.core.errors import InvalidTransition, TaskmillError
from taskmill.core.events import Event, EventFilter
from taskmill.core.jobs import DEFAULT_MERCHANT_ID, Job, JobFilter, JobRun, JobStatus
from taskmill.core.progress import Progress
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.core.text import unstorable
from taskmill.runtime import Runtime
from taskmill.services.jobs import Jobs

jobs_cli = typer.Typer(
    rich_markup_mode="markdown",
    help="List, inspect, cancel and retry jobs (every merchant's).",
    no_args_is_help=True,
)
ACTOR = "cli"
EVENTS_PAGE = 1000

JobArgument = Annotated[
    str, typer.Argument(help="The job's id (or its idempotency key, for the default merchant).")
]


class NotPossible(TaskmillError):
    """A cancel or retry the job's status does not allow (the API's 409)."""


async def _job_id(jobs: Jobs, ident: str) -> str:
    """A job's id from its id or the default merchant's idempotency key (a template's
    name is not a job: ``NotFound`` then names what was typed)."""
    return await jobs.job_id(DEFAULT_MERCHANT_ID, ident)


# -- list ---------------------------------------------------------------------------------


@jobs_cli.command("list")
def list_jobs(
    status: Annotated[
        list[JobStatus] | None,
        typer.Option("--status", help="Only jobs in this status (repeatable)."),
    ] = None,
    task_type: Annotated[
        str | None, typer.Option("--task-type", help="Only jobs of this task type.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Only instances of this template (its name or id)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1000, help="At most this many jobs.")
    ] = 50,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """List jobs, newest first, every merchant's: id, status, task type, queue, attempt,
    when it runs and when it was created."""

    async def work(runtime: Runtime) -> list[Job]:
        jobs = runtime.jobs
        template_id = None
        if template is not None:
            found = await jobs.template_id(DEFAULT_MERCHANT_ID, template)
            template_id = (await jobs.get_template(ALL_MERCHANTS, found)).id
        flt = JobFilter(
            statuses=tuple(status or ()),
            task_type=task_type,
            template_id=template_id,
            limit=limit,
            newest_first=True,
        )
        return await jobs.list(ALL_MERCHANTS, flt)

    with errors_to_exit_codes():
        found = with_runtime(env, config_dir, work)
    if as_json:
        print_json([plain(job) for job in found])
        return
    columns = ["ID", "STATUS", "TASK TYPE", "QUEUE", "ATTEMPT", "RUN AT", "CREATED"]
    print_table(
        columns,
        [
            [
                job.id,
                job.status.value,
                job.task_type,
                job.queue,
                f"{job.attempt}/{job.max_attempts}",
                text(job.run_at),
                text(job.created_at),
            ]
            for job in found
        ],
    )


# -- show ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: Job
    waiting_reason: str | None
    progress: Progress | None
    runs: list[JobRun]
    events: list[Event]


async def _last_events(jobs: Jobs, job_id: str, count: int) -> list[Event]:
    """The job's last ``count`` events, reading its log a page at a time."""
    last: deque[Event] = deque(maxlen=count)
    after = 0
    while True:
        page = await jobs.events(
            ALL_MERCHANTS, EventFilter(job_id=job_id, after_id=after, limit=EVENTS_PAGE)
        )
        last.extend(page)
        if len(page) < EVENTS_PAGE:
            return list(last)
        after = page[-1].id


@jobs_cli.command("show")
def show(
    job: JobArgument,
    events: Annotated[
        int, typer.Option("--events", min=1, max=100, help="How many of its last events.")
    ] = 10,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Show a job: its fields, why it waits (a paused queue, no worker for its task type),
    its progress (what its handler last reported), its runs (one per attempt) and its last
    events."""

    async def work(runtime: Runtime) -> JobDetail:
        jobs = runtime.jobs
        found = await jobs.get(ALL_MERCHANTS, await _job_id(jobs, job))
        return JobDetail(
            found,
            await jobs.waiting_reason(found),
            await jobs.progress(ALL_MERCHANTS, found.id),
            await jobs.runs(ALL_MERCHANTS, found.id),
            await _last_events(jobs, found.id, events),
        )

    with errors_to_exit_codes():
        detail = with_runtime(env, config_dir, work)
    if as_json:
        print_json(plain(detail))
        return
    _print_detail(detail)


def _print_detail(detail: JobDetail) -> None:
    job = detail.job
    pairs = [(name, text(value)) for name, value in plain(job).items()]
    pairs.append(("waiting", detail.waiting_reason or "-"))
    progress = detail.progress
    if progress is not None:
        said = f" {progress.message}" if progress.message else ""
        pairs.append(("progress", f"{progress.fraction:.0%}{said} ({text(progress.reported_at)})"))
    print_fields(pairs)
    typer.echo("\nruns:")
    print_table(
        ["ATTEMPT", "WORKER", "STARTED", "FINISHED", "OUTCOME", "SECONDS", "ERROR"],
        [
            [
                str(run.attempt),
                run.worker_id,
                text(run.started_at),
                text(run.finished_at),
                text(run.outcome),
                "-" if run.duration_seconds is None else f"{run.duration_seconds:.3f}",
                text(run.error),
            ]
            for run in detail.runs
        ],
    )
    typer.echo("\nlast events:")
    print_table(
        ["EVENT", "AT", "TYPE", "ACTOR", "FROM", "TO"],
        [
            [
                str(event.id),
                text(event.occurred_at),
                event.type.value,
                event.actor,
                text(event.data.get("from")),
                text(event.data.get("to")),
            ]
            for event in detail.events
        ],
    )


# -- cancel and retry ---------------------------------------------------------------------


def _not_possible(job_id: str, exc: InvalidTransition, only: str) -> NotPossible:
    return NotPossible(f"job {job_id!r} is {exc.from_status}: only {only}")


@jobs_cli.command("cancel")
def cancel(
    job: JobArgument,
    reason: Annotated[
        str, typer.Option("--reason", help="Recorded as the job's cancel reason.")
    ] = "cancelled by operator",
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Cancel a scheduled, queued or running job (a running handler is stopped); exit 1
    if it already finished."""
    if not reason.strip() or len(reason) > 1000:
        raise typer.BadParameter("must be 1-1000 characters", param_hint="--reason")
    if (why := unstorable(reason)) is not None:
        raise typer.BadParameter(why, param_hint="--reason")

    async def work(runtime: Runtime) -> Job:
        jobs = runtime.jobs
        job_id = await _job_id(jobs, job)
        try:
            return await jobs.cancel(ALL_MERCHANTS, job_id, reason=reason, actor=ACTOR)
        except InvalidTransition as exc:
            raise _not_possible(
                job_id, exc, "scheduled, queued or running jobs can be cancelled"
            ) from exc

    with errors_to_exit_codes():
        done = with_runtime(env, config_dir, work)
    typer.echo(f"{done.id} cancelled")


@jobs_cli.command("retry")
def retry(job: JobArgument, env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Give a failed job one more attempt, now; exit 1 if it is not failed."""

    async def work(runtime: Runtime) -> Job:
        jobs = runtime.jobs
        job_id = await _job_id(jobs, job)
        try:
            return await jobs.retry(ALL_MERCHANTS, job_id, actor=ACTOR)
        except InvalidTransition as exc:
            raise _not_possible(job_id, exc, "failed jobs can be retried") from exc

    with errors_to_exit_codes():
        done = with_runtime(env, config_dir, work)
    typer.echo(f"{done.id} scheduled again (attempt {done.attempt + 1} of {done.max_attempts})")
