"""``taskmill``: parse, configure logging, call one function (STYLE.md habit 15)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from taskmill import __version__
from taskmill.app import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ConfigError, TaskmillError
from taskmill.observability.logs import configure_logging
from taskmill.store import migrate
from taskmill.store.database import Database

cli = typer.Typer(
    help="taskmill: a task scheduler. `taskmill run` starts everything on SQLite.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema commands.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", help="Your tasks: MODULE:ATTRIBUTE naming a Taskmill instance (e.g. tasks:app)."
    ),
]
EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env", help="Environment: reads config/ENV.toml [default: TASKMILL_ENV or development]."
    ),
]
ConfigDirOption = Annotated[
    Path | None,
    typer.Option("--config-dir", help="Directory of ENV.toml files [default: ./config]."),
]

EXIT_CONFIG = 2
EXIT_ERROR = 1


def load_app(spec: str | None, env: str | None, config_dir: Path | None) -> Taskmill:
    """The user's ``Taskmill`` from ``module:attribute``, or a bare one with no tasks."""
    if spec is None:
        return Taskmill(settings=load_settings(env, config_dir))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--app: expected MODULE:ATTRIBUTE, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))  # as uvicorn does: find modules next to the user
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app: cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, Taskmill):
        raise ConfigError(f"--app: {spec!r} is not a Taskmill instance")
    return app


@cli.command()
def run(app: AppOption = None, env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Run taskmill embedded: migrations, queue populator, executor, failure watcher and
    recurrence manager in one process, until Ctrl-C or SIGTERM."""
    with _errors_to_exit_codes():
        load_app(app, env, config_dir).run()


@db_cli.command("upgrade")
def db_upgrade(env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """Migrate the database to the newest schema (also done at every start)."""
    with _errors_to_exit_codes():
        settings = load_settings(env, config_dir)
        configure_logging(settings.logging.level, settings.logging.format)

        async def upgrade() -> str | None:
            db = Database.from_url(settings.database.url)
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
    with _errors_to_exit_codes():
        settings = load_settings(env, config_dir)

        async def current() -> str | None:
            db = Database.from_url(settings.database.url)
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


class _errors_to_exit_codes:
    """Map the error tree to exit codes with a one-line message (no traceback)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ConfigError):
            typer.echo(f"taskmill: configuration error: {exc}", err=True)
            raise typer.Exit(EXIT_CONFIG)
        if isinstance(exc, TaskmillError):
            typer.echo(f"taskmill: {exc}", err=True)
            raise typer.Exit(EXIT_ERROR)


def main() -> None:
    cli()
