"""``taskmill``: parse, configure logging, call one function (STYLE.md habit 15)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from taskmill import __version__
from taskmill.app import ServicesFactory
from taskmill.cli.api_keys import api_keys_cli
from taskmill.cli.common import (
    AppOption,
    ConfigDirOption,
    EnvOption,
    errors_to_exit_codes,
    load_app,
)
from taskmill.cli.events import events_cli
from taskmill.cli.jobs import jobs_cli
from taskmill.cli.queues import queues_cli
from taskmill.cli.retention import prune
from taskmill.cli.templates import templates_cli
from taskmill.cli.workers import workers_cli
from taskmill.config import load_settings
from taskmill.observability.logs import configure_logging
from taskmill.observability.metrics import serve_process_metrics
from taskmill.runtime import Runtime
from taskmill.services.runner import ServiceMain
from taskmill.store import migrate
from taskmill.store.database import Database

cli = typer.Typer(
    rich_markup_mode="markdown",
    help="taskmill: a task scheduler. `taskmill run` starts everything on SQLite.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(
    rich_markup_mode="markdown", help="Database schema commands.", no_args_is_help=True
)
cli.add_typer(db_cli, name="db")
cli.add_typer(api_keys_cli, name="api-keys")
cli.add_typer(queues_cli, name="queues")
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(templates_cli, name="templates")
cli.add_typer(workers_cli, name="workers")
cli.add_typer(events_cli, name="events")
cli.command("prune")(prune)


HostOption = Annotated[str | None, typer.Option("--host", help="(default: api.host)")]
PortOption = Annotated[int | None, typer.Option("--port", help="(default: api.port)")]


def _with_api(host: str | None, port: int | None) -> ServicesFactory:
    def services(runtime: Runtime) -> dict[str, ServiceMain]:
        # Imported here: FastAPI and the routes cost a process that serves no API (an
        # executor, a populator) a third of its start-up and ~15 MB.
        from taskmill.api.app import create_app
        from taskmill.api.server import api_service

        api = runtime.settings.api
        app = create_app(runtime)
        return {"api": api_service(app, host or api.host, port if port is not None else api.port)}

    return services


@cli.command()
def run(
    app: AppOption = None,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Run every service in one process (embedded; SQLite by default) until Ctrl-C.

    Migrations, then the REST API (unless api.serve_in_run is false), queue populator,
    executor, failure watcher, recurrence manager and pruner, until Ctrl-C or SIGTERM."""
    with errors_to_exit_codes():
        taskmill = load_app(app, env, config_dir)
        api = _with_api(host, port)

        def everything(runtime: Runtime) -> dict[str, ServiceMain]:
            services = runtime.services()
            if runtime.settings.api.serve_in_run:
                services |= api(runtime)
            return services

        taskmill.run(everything)


@cli.command("api")
def api_command(
    app: AppOption = None,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Serve only the REST API (the API service).

    Load the same --app as the executors so that unknown task types are refused."""
    with errors_to_exit_codes():
        load_app(app, env, config_dir).run(_with_api(host, port))


def _only(name: str) -> ServicesFactory:
    def services(runtime: Runtime) -> dict[str, ServiceMain]:
        return runtime.services(only={name})

    return services


def _service_command(name: str, summary: str) -> None:
    """Register ``taskmill NAME``: one service in its own process."""

    def command(
        app: AppOption = None, env: EnvOption = None, config_dir: ConfigDirOption = None
    ) -> None:
        with errors_to_exit_codes():
            taskmill = load_app(app, env, config_dir)
            metrics = taskmill.settings.metrics
            if metrics.port is not None:
                serve_process_metrics(metrics.host, metrics.port)
            taskmill.run(_only(name))

    command.__doc__ = f"{summary} Safe to run as several replicas; stops on SIGTERM."
    cli.command(name)(command)


_service_command(
    "executor", "Run jobs: claim queued jobs, execute them under a lease, record outcomes."
)
_service_command("queue-populator", "Move due jobs to queued and publish them to the broker.")
_service_command(
    "failure-watcher",
    "Rescue jobs whose worker died, re-publish lost hints, mark silent workers dead.",
)
_service_command("recurrence-manager", "Turn due templates into job instances.")
_service_command(
    "pruner",
    "Delete finished jobs past their retention age with their runs, events and "
    "dependency rows, in short batches.",
)


@db_cli.command("upgrade")
def db_upgrade(env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Migrate the database to the newest schema (also done at every start)."""
    with errors_to_exit_codes():
        settings = load_settings(env, config_dir)
        configure_logging(settings.logging.level, settings.logging.format)

        async def upgrade() -> str | None:
            db = Database.from_url(
                settings.database.url, transaction_pooler=settings.database.transaction_pooler
            )
            try:
                await migrate.upgrade(db)
                return await migrate.current_revision(db)
            finally:
                await db.close()

        revision = asyncio.run(upgrade())
        typer.echo(f"database at revision {revision}")


@db_cli.command("current")
def db_current(env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Print the database's schema revision and whether it is the newest."""
    with errors_to_exit_codes():
        settings = load_settings(env, config_dir)

        async def current() -> str | None:
            db = Database.from_url(
                settings.database.url, transaction_pooler=settings.database.transaction_pooler
            )
            try:
                return await migrate.current_revision(db)
            finally:
                await db.close()

        revision = asyncio.run(current())
        head = migrate.head_revision()
        state = "up to date" if revision == head else f"behind (newest is {head})"
        typer.echo(f"{revision or 'empty'}: {state}")


@cli.command()
def version() -> None:
    """Print the taskmill version."""
    typer.echo(__version__)


OPENAPI_FILE = Path("docs/api/openapi.json")


@cli.command()
def openapi(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the document")
    ] = OPENAPI_FILE,
    check: Annotated[
        bool, typer.Option("--check", help="write nothing; exit 1 if the file is stale")
    ] = False,
) -> None:
    """Write the OpenAPI document the API serves (sorted keys: the same text every run)."""
    from taskmill.api.app import openapi_json  # (see _with_api)

    text = openapi_json()
    if check:
        current = output.read_text(encoding="utf-8") if output.is_file() else None
        if current != text:
            typer.echo(f"{output} is stale: run `taskmill openapi --output {output}`", err=True)
            raise typer.Exit(1)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")


def main() -> None:
    cli()
