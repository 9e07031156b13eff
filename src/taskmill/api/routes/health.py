"""/healthz (the process is up) and /readyz (database reachable, schema current; with
``warnings`` about the tables' health, which never fail readiness). No key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from taskmill.api.responses import ANY, errors
from taskmill.core.errors import StoreError
from taskmill.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str
    reason: str | None = None
    warnings: list[str] | None = None
    """Present when ready but something needs an operator: a table whose dead row
    versions pile up (autovacuum off or behind; docs/howto/operating.md#table-health)."""


@router.get("/healthz", responses=errors(*ANY))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {
            "model": Readiness,
            "description": 'Ready: `{"status": "ok"}`, with `warnings` when a table needs care',
        },
        503: {"model": Readiness, "description": "Not ready, with the `reason`"},
        **errors(*ANY),
    },
)
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    try:
        current = await runtime.schema_is_current()
    except StoreError as exc:
        # Unauthenticated: the driver's text (host, port, user) stays in the log.
        log.warning("not ready: %s", exc)
        body = {"status": "unavailable", "reason": "the database is unavailable"}
        return JSONResponse(body, status_code=503)
    if not current:
        body = {"status": "unavailable", "reason": "database schema is not at the newest revision"}
        return JSONResponse(body, status_code=503)
    warnings = await _table_warnings(runtime)
    return JSONResponse({"status": "ok", **({"warnings": warnings} if warnings else {})})


async def _table_warnings(runtime: Runtime) -> list[str]:
    """The tables' health: a detail for operators, never a reason to take this process
    out of rotation (a replica restarted for it would find the same tables)."""
    try:
        return await runtime.maintenance.warnings()
    except StoreError as exc:
        log.warning("table statistics unreadable: %s", exc)
        return []
