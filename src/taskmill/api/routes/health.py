"""/healthz (the process is up) and /readyz (database reachable, schema current). No key."""

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


@router.get("/healthz", responses=errors(*ANY))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"model": Readiness, "description": 'Ready: `{"status": "ok"}`'},
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
    return JSONResponse({"status": "ok"})
