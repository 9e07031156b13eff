"""The built-in ``http`` task (seed 004): one HTTP request per attempt, success on 2xx.

Payload: ``{"method", "url", "headers", "body", "timeout_seconds"}``; ``body`` is a
string (sent as is) or any other JSON value (sent as JSON). The stored result is
``{"status", "headers", "body", "truncated"}`` with at most ``max_response_bytes`` of
the body: the response is streamed and reading stops at the cap, so a huge answer
never sits in memory. A non-2xx answer, a network error or a timeout fails the attempt
(and the normal retry policy applies). Every connection goes through the SSRF guard
in :mod:`taskmill.executors.ssrf`; a destination it refuses fails the job at once,
``ssrf_blocked: <why>``, with no further attempt (another would be refused the same).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from taskmill.core.errors import Fail, TimedOut, ValidationError
from taskmill.executors.context import TaskContext
from taskmill.executors.http_builtin import HttpExecutorConfig as HttpExecutorConfig  # re-exported
from taskmill.executors.ssrf import (
    AddressPolicy,
    AddressRefused,
    GuardedBackend,
    parse_host_literal,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PAYLOAD_FIELDS = ("method", "url", "headers", "body", "timeout_seconds")
MAX_URL_LENGTH = 8192
MAX_HEADERS = 100
ERROR_EXCERPT_CHARS = 200
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 header field name
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")


class HttpError(Exception):
    """The request failed: non-2xx status, network error, timeout or too many redirects."""


class HttpTimedOut(HttpError, TimedOut):
    """The request ran past its ``timeout_seconds`` (recorded as ``timed_out``)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A checked payload."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    body: Any  # None: no body; str: sent as is; anything else: sent as JSON
    has_body: bool
    timeout_seconds: float


# -- validation ----------------------------------------------------------------


def _method(payload: Mapping[str, Any]) -> str:
    method = payload.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise ValidationError("payload.method", f"must be one of {', '.join(sorted(METHODS))}")
    return method.upper()


def check_url(raw: object, policy: AddressPolicy, field: str = "payload.url") -> httpx.URL:
    """Parse ``raw`` as an http(s) URL and refuse a host that is a refused IP literal.

    Host names are not resolved here: what a name resolves to at creation says nothing
    about what it resolves to at run time, so names are checked on connect.
    """
    if not isinstance(raw, str) or not raw:
        raise ValidationError(field, "is required and must be a string")
    if len(raw) > MAX_URL_LENGTH:
        raise ValidationError(field, f"is longer than {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ValidationError(field, f"is not a valid URL: {exc}") from None
    return check_parsed_url(url, policy, field)


def check_parsed_url(url: httpx.URL, policy: AddressPolicy, field: str) -> httpx.URL:
    if url.scheme not in ("http", "https"):
        raise ValidationError(field, f"scheme must be http or https, not {url.scheme!r}")
    if not url.host:
        raise ValidationError(field, "has no host")
    literal = parse_host_literal(url.host)
    reason = policy.refusal(literal) if literal is not None else None
    if reason is not None:
        raise ValidationError(field, f"refused: {reason}")
    return url


def _headers(payload: Mapping[str, Any]) -> dict[str, str]:
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValidationError("payload.headers", "must be an object of string to string")
    if len(headers) > MAX_HEADERS:
        raise ValidationError("payload.headers", f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValidationError("payload.headers", f"{name!r} is not a valid header name")
        if not isinstance(value, str) or _BAD_VALUE_CHARS.search(value):
            raise ValidationError(
                f"payload.headers.{name}", "must be a string without CR, LF or NUL"
            )
    return dict(headers)


def _timeout(payload: Mapping[str, Any], config: HttpExecutorConfig) -> float:
    value = payload.get("timeout_seconds", config.default_timeout_seconds)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("payload.timeout_seconds", "must be a number of seconds")
    if not 0 < value <= config.max_timeout_seconds:
        raise ValidationError(
            "payload.timeout_seconds",
            f"must be greater than 0 and at most {config.max_timeout_seconds:g} "
            "(http.max_timeout_seconds)",
        )
    return float(value)


def parse_payload(payload: Any, config: HttpExecutorConfig) -> HttpRequest:
    """The checked request, or :class:`ValidationError` naming the first bad field."""
    if not isinstance(payload, dict):
        raise ValidationError("payload", "must be an object with at least a url")
    unknown = sorted(set(payload) - set(PAYLOAD_FIELDS))
    if unknown:
        raise ValidationError(
            f"payload.{unknown[0]}", f"unknown field (known: {', '.join(PAYLOAD_FIELDS)})"
        )
    return HttpRequest(
        method=_method(payload),
        url=check_url(payload.get("url"), config.policy()),
        headers=_headers(payload),
        body=payload.get("body"),
        has_body=payload.get("body") is not None,
        timeout_seconds=_timeout(payload, config),
    )


# -- running -------------------------------------------------------------------


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with a connection pool whose every connection is guarded."""

    def __init__(self, config: HttpExecutorConfig, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx 0.28 has no public way to choose httpcore's network backend (a PR for
        # one is open upstream), so the pool it built is replaced by a guarded one.
        # The integration tests refusing "localhost" fail if this ever stops working.
        guard = GuardedBackend(config.policy(), config.network_backend, config.resolver)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=ssl_context, network_backend=guard)


def _client(config: HttpExecutorConfig, ssl_context: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=_GuardedTransport(config, ssl_context),
        # No proxies from the environment: a proxy mount would bypass the guard.
        trust_env=False,
        # Redirects are followed by _send, which re-checks and never reads their bodies.
        follow_redirects=False,
        # Ask for the body as is: the cap then bounds memory (a decoder could expand a
        # small compressed chunk into megabytes before we could stop it).
        headers={"user-agent": config.user_agent, "accept-encoding": "identity"},
    )


def _build(client: httpx.AsyncClient, request: HttpRequest) -> httpx.Request:
    body: dict[str, Any] = {}
    if isinstance(request.body, str):
        body["content"] = request.body
    elif request.has_body:
        body["json"] = request.body
    return client.build_request(
        request.method,
        request.url,
        headers=request.headers,
        timeout=httpx.Timeout(request.timeout_seconds),
        **body,
    )


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body, and whether there was more. Reading stops one
    chunk past the cap; the rest is never read (closing the response drops the
    connection)."""
    chunks: list[bytes] = []
    size = 0
    raw = response.aiter_raw()
    try:
        async for chunk in raw:
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                break
    finally:
        if isinstance(raw, AsyncGenerator):  # close it now, not whenever it is collected
            await raw.aclose()
    return b"".join(chunks)[:cap], size > cap


def _decode(response: httpx.Response, data: bytes) -> str:
    try:
        return data.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _result_headers(response: httpx.Response, config: HttpExecutorConfig) -> dict[str, str]:
    wanted = {name.lower() for name in config.response_headers}
    return {k: v for k, v in response.headers.items() if not wanted or k in wanted}


async def _outcome(
    response: httpx.Response, request: httpx.Request, config: HttpExecutorConfig
) -> dict[str, Any]:
    data, truncated = await _read_capped(response, config.max_response_bytes)
    body = _decode(response, data)
    if not response.is_success:
        excerpt = body[:ERROR_EXCERPT_CHARS]
        raise HttpError(
            f"HTTP {response.status_code} {response.reason_phrase} from "
            f"{request.method} {request.url}: {excerpt!r}"
        )
    return {
        "status": response.status_code,
        "headers": _result_headers(response, config),
        "body": body,
        "truncated": truncated,
    }


def _check_hop(url: httpx.URL, policy: AddressPolicy) -> None:
    """A redirect's location, checked as a job's URL is at creation: a refused literal
    or scheme is refused like the guard refuses an address (the guard then checks the
    next hop's connection too)."""
    try:
        check_parsed_url(url, policy, "redirect location")
    except ValidationError as exc:
        raise AddressRefused(f"{exc.field} {exc.reason}") from None


async def _send(
    client: httpx.AsyncClient, request: httpx.Request, config: HttpExecutorConfig
) -> dict[str, Any]:
    """Send ``request``, following redirects only if configured, each hop re-checked."""
    policy = config.policy()
    for _ in range(config.max_redirects + 1):
        response = await client.send(request, stream=True)
        try:
            follow = response.next_request if config.follow_redirects else None
            if follow is None:
                return await _outcome(response, request, config)
            _check_hop(follow.url, policy)
            request = follow
        finally:
            await response.aclose()
    raise HttpError(f"more than {config.max_redirects} redirects (http.max_redirects)")


async def _perform(
    request: HttpRequest, config: HttpExecutorConfig, ssl_context: ssl.SSLContext
) -> dict[str, Any]:
    deadline = asyncio.timeout(request.timeout_seconds)
    try:
        async with deadline, _client(config, ssl_context) as client:
            return await _send(client, _build(client, request), config)
    except TimeoutError:
        if not deadline.expired():
            raise  # the job's own timeout: the worker reports it
        raise HttpTimedOut(f"request timed out after {request.timeout_seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise HttpError(f"{request.method} {request.url}: {type(exc).__name__}: {exc}") from exc
    except AddressRefused as exc:  # at connect, on a redirect hop or a rebinding answer
        raise Fail(f"ssrf_blocked: {exc}") from exc


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # built once, at the first request


async def handle(ctx: TaskContext, payload: Any, config: HttpExecutorConfig) -> dict[str, Any]:
    """One attempt of an ``http`` job (``http_builtin.http_task`` calls it)."""
    # Checked again: the configuration may have changed since the job was created.
    request = parse_payload(payload, config)
    ctx.logger.info("%s %s", request.method, request.url)
    return await _perform(request, config, _ssl_context())
