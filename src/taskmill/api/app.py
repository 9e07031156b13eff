"""``create_app(runtime)``: the FastAPI application, built from a runtime, never at import."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from taskmill import __version__
from taskmill.api import errors
from taskmill.api.auth import Authenticator, FailureLimiter
from taskmill.api.limits import RequestLimits
from taskmill.api.options import AllowOptions
from taskmill.api.quota import MerchantQuota
from taskmill.api.routes import (
    admin,
    events,
    health,
    jobs,
    metrics,
    queues,
    stats,
    templates,
)
from taskmill.api.tracing import RequestSpans
from taskmill.runtime import Runtime
from taskmill.ui import ui_router

API_DESCRIPTION = """
taskmill's REST API. Every request except `/healthz`, `/readyz`, the UI's files (`/ui`)
and this explorer (`/docs`, whose files taskmill serves itself) carries an `x-api-key`
header (`/metrics` also takes `Authorization: Bearer`); everything a key sees and changes
belongs to its merchant.
Errors have the body `{"error": {"type", "message", "fields": [{"field", "reason"}]}}`.
"""


# Every router the app serves; the route meta-test walks these.
ROUTERS: tuple[APIRouter, ...] = (
    jobs.router,
    templates.router,
    templates.schedules,
    events.router,
    admin.router,
    health.router,
    stats.router,
    queues.router,
    metrics.router,
)


DOCS_ASSETS = "/docs-assets"

# What a browser may send and read cross-origin when ``api.cors_origins`` is set.
CORS_HEADERS = ("x-api-key", "authorization", "content-type")
CORS_EXPOSED = ("location", "retry-after")


def _routed_app() -> FastAPI:
    """The app with every documented route and nothing else: what the OpenAPI document
    is made from, served or exported (so the two cannot differ). The explorer at
    ``/docs`` loads Swagger UI from ``/docs-assets`` (fastapi-offline ships the files),
    never from a CDN: it works without internet."""
    app = FastAPIOffline(
        title="taskmill",
        version=__version__,
        description=API_DESCRIPTION,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        static_url=DOCS_ASSETS,
    )
    for router in ROUTERS:
        app.include_router(router)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the API serves at ``/openapi.json`` (no runtime needed)."""
    return _routed_app().openapi()


def openapi_json() -> str:
    """:func:`openapi_document` as stable text: sorted keys, two-space indent, newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def create_app(runtime: Runtime) -> FastAPI:
    """The API for ``runtime`` (its database, clock, scheduler and API keys)."""
    api = runtime.settings.api
    app = _routed_app()
    app.state.runtime = runtime
    quota = None
    if api.requests_per_second_per_merchant is not None:
        rate = api.requests_per_second_per_merchant
        burst = api.request_burst_per_merchant or max(1, math.ceil(rate))
        quota = MerchantQuota(rate, burst)
    app.state.authenticator = Authenticator(
        runtime.api_keys, FailureLimiter(api.auth_failures_per_minute), quota
    )
    errors.install(app)
    # Outside ROUTERS: static files with no data and no key (the page asks for one).
    ui = ui_router()
    app.include_router(ui)
    # The routes themselves (the app's own list holds included routers as single items).
    served = [r for r in app.routes if getattr(r, "methods", None)]
    served += [r for router in (*ROUTERS, ui) for r in router.routes]
    app.add_middleware(AllowOptions, routes=served)
    app.add_middleware(
        RequestLimits, max_body_bytes=api.max_body_bytes, max_json_depth=api.max_json_depth
    )
    app.add_middleware(RequestSpans)
    if api.cors_origins:  # off by default: no CORS header unless origins are configured
        # Outside the limits, so that their 413/415/422 answers carry the CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(api.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=list(CORS_HEADERS),
            expose_headers=list(CORS_EXPOSED),
            max_age=600,
        )
    # Added last, so outermost: it also times requests the limits reject.
    app.add_middleware(metrics.RequestMetrics, routes=[r for x in ROUTERS for r in x.routes])
    return app
