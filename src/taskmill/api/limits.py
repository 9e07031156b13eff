"""Request limits enforced by taskmill itself (uvicorn and Starlette set none).

* bodies over ``max_body_bytes`` -> 413, counted as they arrive, so a chunked body with
  no Content-Length is cut off too;
* JSON bodies that are malformed, use NaN/Infinity or duplicate keys, or nest deeper
  than ``max_json_depth`` -> 400 (deep nesting would otherwise hit Python's recursion
  limit inside the framework);
* a body that is not ``application/json`` -> 415;
* NUL (U+0000) in a JSON string, the path or a query parameter -> 422 naming where:
  PostgreSQL cannot store it in text or jsonb (it would be a 500 there, and SQLite would
  accept it: one rule for both backends);
* a client that disconnects before its body is complete gets nothing run for it (the
  part received is never handed to a route as if it were the whole body).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskmill.api.errors import error_response

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class BadJson(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise BadJson(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadJson(f"duplicate key {key!r}")
        result[key] = value
    return result


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def nul_in(value: Any) -> str | None:
    """Where a NUL character is in a parsed JSON value (a dotted path), or ``None``."""
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return where
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return where
                stack.append((child, key if where == "body" else f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{n}") for n, child in enumerate(item))
    return None


def nul_in_url(scope: Scope) -> str | None:
    """The query parameter (or ``path``) holding a NUL character, or ``None``."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return str(name).replace("\x00", "")
    return None


def _nul_response(where: str) -> Any:
    reason = "must not contain NUL (U+0000)"
    return error_response(
        422, "validation_error", "the request is invalid", [{"field": where, "reason": reason}]
    )


def check_json(body: bytes, max_depth: int) -> Any:
    """Raise :class:`BadJson` unless ``body`` is strict JSON within ``max_depth``."""
    try:
        parsed = json.loads(body, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise BadJson("nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadJson(str(exc)) from exc
    if json_depth(parsed) > max_depth:
        raise BadJson(f"nested deeper than {max_depth} levels")
    return parsed


class RequestLimits:
    """ASGI middleware applying the limits above before any route sees the request."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = nul_in_url(scope)
        if where is not None:
            await _nul_response(where)(scope, receive, send)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(receive)
        except _Disconnected:
            return  # nobody to answer, and a partial body must not become a job
        except _TooLarge:
            limit = self.max_body_bytes
            response = error_response(
                413,
                "payload_too_large",
                f"the body exceeds {limit} bytes",
                [{"field": "body", "reason": f"larger than {limit} bytes"}],
            )
            await response(scope, receive, send)
            return
        if body:
            problem = self._problem(scope, body)
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _problem(self, scope: Scope, body: bytes) -> Any:
        headers = dict(scope.get("headers", []))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            return error_response(
                415, "unsupported_media_type", "send the body as application/json"
            )
        try:
            parsed = check_json(body, self.max_json_depth)
        except BadJson as exc:
            return error_response(
                400,
                "malformed_json",
                f"the body is not acceptable JSON: {exc}",
                [{"field": "body", "reason": str(exc)}],
            )
        where = nul_in(parsed)
        return None if where is None else _nul_response(where)


def _replay(body: bytes, original: Receive) -> Receive:
    """Hand the already-read body to the app, then the real stream (for disconnects)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
