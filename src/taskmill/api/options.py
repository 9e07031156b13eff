"""``OPTIONS`` on any path the API serves: ``204`` with ``Allow`` listing its methods (RFC 9110).

A CORS preflight (an ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
never gets here when CORS is on: Starlette's ``CORSMiddleware`` outside answers it.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send


def allowed_methods(scope: Scope, routes: Sequence[BaseRoute]) -> set[str]:
    """Every method some route serves at ``scope``'s path (empty: no route has the path)."""
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


class AllowOptions:
    """ASGI middleware answering ``OPTIONS`` itself; every other request passes through.

    A path no route in ``routes`` serves goes on to the app (its ``404``).
    """

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = allowed_methods(scope, self.routes)
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
