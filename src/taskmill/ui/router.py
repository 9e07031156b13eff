"""``ui_router()``: serves the UI's files from the package, read once when it is built."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

UI_PATH = "/ui"
STATIC_PATH = f"{UI_PATH}/static"

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

# The UI holds an API key, so script injection is the threat to close: only this
# origin's files run (no inline script, no eval), nothing is framed, and the key's
# requests go to this origin only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file, its content type and an ETag for revalidation."""

    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file in the package's ``static/`` folder, by name."""
    assets = {}
    for entry in resources.files("taskmill.ui").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if not entry.is_file() or suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        assets[entry.name] = Asset(body, _CONTENT_TYPES[suffix], etag)
    return assets


def _serve(asset: Asset, request: Request) -> Response:
    # no-cache = revalidate each time: an upgraded taskmill never runs yesterday's script.
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


def ui_router() -> APIRouter:
    """The UI at ``/ui`` (and ``/`` redirecting there). No key: the files hold no data;
    the page asks for a key and sends it with each API call."""
    assets = load_assets()
    index = assets["index.html"]
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse(UI_PATH)

    @router.get(UI_PATH)
    @router.get(f"{UI_PATH}/")
    async def page(request: Request) -> Response:
        return _serve(index, request)

    @router.get(STATIC_PATH + "/{name}")
    async def static(name: str, request: Request) -> Response:
        asset = assets.get(name)  # a fixed set of names: no path ever reaches the disk
        if asset is None:
            raise HTTPException(404, "not found")
        return _serve(asset, request)

    return router
