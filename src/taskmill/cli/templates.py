"""``taskmill templates``: list recurring schedules, switch them on and off, preview
their next fires (every merchant's; names are found among the default merchant's)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.cli.render import JsonOption, plain, print_json, print_table, text
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.templates import FirePreview, Template
from taskmill.core.tenants import ALL_MERCHANTS
from taskmill.runtime import Runtime
from taskmill.services.templates import TemplateUpdate

templates_cli = typer.Typer(
    rich_markup_mode="markdown",
    help="List recurring schedules (templates), switch them on or off, preview their fires.",
    no_args_is_help=True,
)
ACTOR = "cli"
MAX_TEMPLATES = 1000

TemplateArgument = Annotated[str, typer.Argument(help="The template's name or id.")]


def _last_error(template: Template) -> str | None:
    # The store's template record carries why it was last switched off; core's does not.
    error = getattr(template, "last_error", None)
    return None if error is None else str(error)


def _schedule(template: Template) -> str:
    if template.cron_expression is not None:
        return f"cron {template.cron_expression}"
    return f"every {template.interval_seconds:g}s"


async def _template(runtime: Runtime, ident: str) -> Template:
    found = await runtime.jobs.template_id(DEFAULT_MERCHANT_ID, ident)
    return await runtime.jobs.get_template(ALL_MERCHANTS, found)


@templates_cli.command("list")
def list_templates(
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_TEMPLATES, help="At most this many.")
    ] = 100,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """List templates, oldest first: name, schedule, time zone, whether active, next fire
    and why it was switched off (last_error)."""

    async def work(runtime: Runtime) -> list[Template]:
        return await runtime.jobs.list_templates(ALL_MERCHANTS, limit=limit)

    with errors_to_exit_codes():
        found = with_runtime(env, config_dir, work)
    if as_json:
        print_json([plain(t) | {"last_error": _last_error(t)} for t in found])
        return
    print_table(
        ["NAME", "SCHEDULE", "ZONE", "ACTIVE", "NEXT FIRE", "LAST ERROR", "ID"],
        [
            [
                t.name,
                _schedule(t),
                t.timezone,
                "yes" if t.active else "no",
                text(t.next_run_at),
                text(_last_error(t)),
                t.id,
            ]
            for t in found
        ],
    )


def _switch(ident: str, active: bool, env: str | None, config_dir: Path | None) -> None:
    async def work(runtime: Runtime) -> Template:
        template = await _template(runtime, ident)
        update = TemplateUpdate(active=active)
        return await runtime.jobs.update_template(ALL_MERCHANTS, template.id, update, actor=ACTOR)

    with errors_to_exit_codes():
        done = with_runtime(env, config_dir, work)
    state = f"enabled, next fire {text(done.next_run_at)}" if active else "disabled"
    typer.echo(f"{done.name} ({done.id}) {state}")


@templates_cli.command("enable")
def enable(
    template: TemplateArgument, env: EnvOption = None, config_dir: ConfigDirOption = None
) -> None:
    """Switch a template on: it fires from its next tick after now (its schedule is
    checked first, and its last_error cleared)."""
    _switch(template, True, env, config_dir)


@templates_cli.command("disable")
def disable(
    template: TemplateArgument, env: EnvOption = None, config_dir: ConfigDirOption = None
) -> None:
    """Switch a template off: it creates no more jobs (those already created stay)."""
    _switch(template, False, env, config_dir)


@templates_cli.command("preview")
def preview(
    template: TemplateArgument,
    count: Annotated[
        int, typer.Option("--count", min=1, max=100, help="How many fires to show.")
    ] = 10,
    as_json: JsonOption = False,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Show a template's next fires after now, in UTC and in its time zone; fires in a
    repeated (fall-back) hour or moved by a clock change are marked DST."""

    async def work(runtime: Runtime) -> list[FirePreview]:
        found = await _template(runtime, template)
        return await runtime.jobs.preview(ALL_MERCHANTS, found.id, count)

    with errors_to_exit_codes():
        fires = with_runtime(env, config_dir, work)
    if as_json:
        print_json([plain(fire) for fire in fires])
        return
    print_table(
        ["UTC", "LOCAL", "DST"],
        [[text(f.at), text(f.local), "DST" if f.dst_affected else ""] for f in fires],
    )
