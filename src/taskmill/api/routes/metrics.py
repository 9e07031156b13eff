"""/metrics for Prometheus, and the middleware that times every API request.

``/metrics`` shows every tenant's numbers (merchant labels, all queues), so it needs a
key with the ``admin`` scope. Prometheus cannot send ``x-api-key``, but its scrape
config can send ``Authorization: Bearer <key>`` (``authorization.credentials_file``),
so both headers are accepted here; the same authenticator and failure throttling apply.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmill.api.auth import Authenticator, api_key_header
from taskmill.api.responses import AUTHENTICATED, errors
from taskmill.core.errors import StoreError
from taskmill.core.tenants import Scope as KeyScope
from taskmill.observability import metrics
from taskmill.runtime import Runtime

router = APIRouter(tags=["monitoring"])
bearer = HTTPBearer(auto_error=False)

UNMATCHED = "unmatched"


async def metrics_reader(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    authorization: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Authenticate ``x-api-key`` or ``Authorization: Bearer``; require ``admin``."""
    authenticator: Authenticator = request.app.state.authenticator
    plaintext = api_key or (authorization.credentials if authorization else None)
    key = await authenticator.authenticate(request, plaintext)
    if not key.allows(KeyScope.ADMIN):
        raise HTTPException(403, "this key lacks the 'admin' scope")


metrics_reader.required_scope = KeyScope.ADMIN  # type: ignore[attr-defined]  # route meta-test


async def _snapshot(runtime: Runtime) -> metrics.StoreSnapshot:
    try:
        found = await runtime.jobs.system_stats()
        tables = await runtime.maintenance.stats() or []
    except StoreError:
        # The process metrics are still worth serving; taskmill_store_up says why the
        # store gauges are missing.
        return metrics.StoreSnapshot(up=False)
    return metrics.StoreSnapshot(
        jobs_by_state={status.value: n for status, n in found.unfinished.items()},
        backlog=[
            metrics.QueueBacklog(b.queue, b.depth, b.oldest_due_age_seconds) for b in found.backlog
        ],
        workers_by_status=found.workers_by_status,
        heartbeats=[metrics.WorkerHeartbeat(h.worker_id, h.age_seconds) for h in found.heartbeats],
        unserved=found.unserved,
        tables=tables,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **errors(*AUTHENTICATED),
    },
    dependencies=[Depends(metrics_reader)],
)
async def get_metrics(request: Request) -> Response:
    """Prometheus metrics: this process's counters and histograms, and gauges read from
    the database now (jobs by state, queue depth and age, worker heartbeats)."""
    runtime: Runtime = request.app.state.runtime
    body = metrics.exposition(await _snapshot(runtime))
    return Response(body, media_type=metrics.CONTENT_TYPE)


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The path template that served (or would serve) ``scope``; never the raw path,
    whose ids would make a time series per job."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    # Rejected before routing (413, 415, 400): find the route it was meant for.
    for route in routes:
        match, _ = route.matches(scope)
        template = getattr(route, "path", None)
        if match is Match.FULL and isinstance(template, str):
            return template
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware: every HTTP request's latency, by method, route template, status.

    ``routes`` name the requests rejected before routing (the body limits run first).
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception escaping the app becomes a 500 further out

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope, self.routes)
            metrics.request_observed(scope["method"], route, status, elapsed)
