"""An API over a real SQLite file with two merchants, and keys for each."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from taskmill import TaskContext, Taskmill
from taskmill.api.app import create_app
from taskmill.config import load_settings
from taskmill.core.jobs import DEFAULT_MERCHANT_ID
from taskmill.core.tenants import Scope
from taskmill.runtime import Runtime
from taskmill.store import tenants
from taskmill.testing import FrozenClock

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ALL_SCOPES = [Scope.JOBS_READ, Scope.JOBS_WRITE, Scope.TEMPLATES_READ, Scope.TEMPLATES_WRITE]


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Taskmill
    runtime: Runtime
    clock: FrozenClock
    admin: dict[str, str]  # headers of an admin key (merchant A)
    a: dict[str, str]  # merchant A, all non-admin scopes
    b: dict[str, str]  # merchant B, all non-admin scopes
    merchant_b: str
    asgi: FastAPI | None = None  # the app behind ``client``

    async def key(self, scopes: list[Scope], merchant: str = DEFAULT_MERCHANT_ID, **kw: Any) -> str:
        issued = await self.runtime.api_keys.issue(merchant, "test", scopes, actor="test", **kw)
        return issued.plaintext

    async def job(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/jobs", json={"task_type": "echo", **body}, headers=headers
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


def build_app(url: str, clock: FrozenClock, tmp_path: Path, **sections: Any) -> Taskmill:
    """The test app; ``sections`` override settings (``api`` keys are merged in)."""
    api = {"secret_key_file": str(tmp_path / "secret"), "auth_failures_per_minute": 20}
    api |= sections.pop("api", {})
    settings = load_settings("test", None, database={"url": url}, api=api, **sections)
    app = Taskmill(settings=settings, clock=clock)

    @app.task("echo", max_retries=0)
    async def echo(ctx: TaskContext, payload: Any) -> Any:
        if payload == "fail":
            raise RuntimeError("asked to fail")
        if isinstance(payload, dict) and "fail_with" in payload:
            raise RuntimeError(payload["fail_with"])
        return payload

    return app


@asynccontextmanager
async def serve_api(url: str, tmp_path: Path, **sections: Any) -> AsyncIterator[Api]:
    """The in-process API over ``url`` with merchants A (default) and B and their keys."""
    clock = FrozenClock(NOW)
    app = build_app(url, clock, tmp_path, **sections)
    runtime = await app.open()
    try:
        merchant_b = await tenants.create_merchant(runtime.db, "merchant B", now=NOW)
        asgi = create_app(runtime)
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://taskmill") as client:
            holder = Api(client, app, runtime, clock, {}, {}, {}, merchant_b.id, asgi)
            holder.admin = {"x-api-key": await holder.key([Scope.ADMIN])}
            holder.a = {"x-api-key": await holder.key(ALL_SCOPES)}
            holder.b = {"x-api-key": await holder.key(ALL_SCOPES, merchant_b.id)}
            yield holder
    finally:
        await app.stop()


@asynccontextmanager
async def api_client(app: Taskmill) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A client of the in-process API over ``app`` (as it is configured) and the headers
    of a ``jobs:write`` key of the default merchant."""
    runtime = await app.open()
    issued = await runtime.api_keys.issue(
        DEFAULT_MERCHANT_ID, "test", [Scope.JOBS_WRITE], actor="test"
    )
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskmill") as client:
        yield client, {"x-api-key": issued.plaintext}


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(database_url, tmp_path) as holder:
        yield holder
