"""``taskmill api-keys``: bootstrap and manage API keys from the shell."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from taskmill.cli.common import ConfigDirOption, EnvOption, errors_to_exit_codes, with_runtime
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.tenants import ALL_MERCHANTS, ApiKey, Scope
from taskmill.runtime import Runtime

api_keys_cli = typer.Typer(
    rich_markup_mode="markdown", help="Create, list and revoke API keys.", no_args_is_help=True
)


@api_keys_cli.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "bootstrap",
    admin: Annotated[bool, typer.Option("--admin", help="Grant every scope.")] = False,
    scope: Annotated[
        list[Scope] | None, typer.Option("--scope", help="A scope to grant (repeatable).")
    ] = None,
    merchant: Annotated[
        str, typer.Option("--merchant", help="Merchant id (default: the embedded one).")
    ] = DEFAULT_MERCHANT_ID,
    expires: Annotated[
        datetime | None, typer.Option("--expires", help="Expiry (UTC), e.g. 2027-01-01.")
    ] = None,
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Create a key and print it once: it cannot be shown again."""
    scopes = {Scope.ADMIN} if admin else set(scope or [])
    if not scopes:
        raise typer.BadParameter("give --admin or at least one --scope", param_hint="--scope")
    expires_at = expires.replace(tzinfo=UTC) if expires and expires.tzinfo is None else expires

    async def work(runtime: Runtime) -> str:
        issued = await runtime.api_keys.issue(
            merchant, name, scopes, expires_at=expires_at, actor="cli"
        )
        return issued.plaintext

    with errors_to_exit_codes():
        typer.echo(with_runtime(env, config_dir, work))


@api_keys_cli.command("list")
def list_keys(env: EnvOption = None, config_dir: ConfigDirOption = None) -> None:
    """List keys (prefixes only; secrets are never stored)."""

    async def work(runtime: Runtime) -> list[ApiKey]:
        return await runtime.api_keys.list_keys(ALL_MERCHANTS)

    for key in with_runtime(env, config_dir, work):
        state = "revoked" if key.revoked_at else "active"
        scopes = ",".join(sorted(key.scopes))
        typer.echo(f"{key.id}  {key.prefix}  {state:7}  {scopes}  {key.name}")


@api_keys_cli.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `list`).")],
    env: EnvOption = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Revoke a key: it stops working on every API process at once."""

    async def work(runtime: Runtime) -> None:
        await runtime.api_keys.revoke(key_id, actor="cli")

    with errors_to_exit_codes():
        with_runtime(env, config_dir, work)
        typer.echo(f"revoked {key_id}")
