"""What every ``taskmill`` command shares: options, loading the app, exit codes."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from taskmill.app import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ConfigError, TaskmillError
from taskmill.executors.python import TaskRegistry
from taskmill.runtime import Runtime

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app", help="Your tasks: MODULE:ATTRIBUTE naming a Taskmill instance (e.g. tasks:app)."
    ),
]
EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        help="Environment: reads config/ENV.toml (default: $TASKMILL_ENV, else development).",
    ),
]
ConfigDirOption = Annotated[
    Path | None,
    typer.Option("--config-dir", help="Directory of ENV.toml files (default: ./config)."),
]

T = TypeVar("T")


def with_runtime(
    env: str | None, config_dir: Path | None, work: Callable[[Runtime], Awaitable[T]]
) -> T:
    """``await work(runtime)`` on a runtime opened from the settings (no services run)."""

    async def main() -> T:
        runtime = Runtime(load_settings(env, config_dir), TaskRegistry())
        try:
            await runtime.open()
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(main())


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
    if env is not None or config_dir is not None:
        # The module built its settings at import; the command line wins over them.
        app.settings = load_settings(env, config_dir)
    return app


class errors_to_exit_codes:
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
