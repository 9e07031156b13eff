"""A span around every API request (a no-op without the ``otel`` extra), so a job created
by the request carries the request's trace into its runs."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from taskmill.observability import tracing


class RequestSpans:
    """ASGI middleware: one span per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with tracing.span(f"{scope['method']} {scope['path']}", attributes=attributes):
            await self.app(scope, receive, send)
