"""The only place that knows HTTP status codes: the error tree -> JSON error bodies.

Every error body is ``{"error": {"type", "message", "fields": [{"field", "reason"}]}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskmill.core.errors import (
    BrokerError,
    Conflict,
    NotFound,
    QuotaExceeded,
    StorageFull,
    StoreError,
    StoreUnavailable,
    TaskmillError,
    ValidationError,
)

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[TaskmillError], int, str]] = [
    (ValidationError, 422, "validation_error"),
    (NotFound, 404, "not_found"),
    (QuotaExceeded, 429, "quota_exceeded"),
    (Conflict, 409, "conflict"),
    (StorageFull, 507, "storage_full"),
    (StoreUnavailable, 503, "unavailable"),
    (BrokerError, 503, "unavailable"),
    (StoreError, 500, "internal_error"),
]
# What a client is told of a failure of the infrastructure: never the driver's text,
# which names hosts, ports, constraints and SQL. The details go to the log.
_INFRASTRUCTURE: list[tuple[type[TaskmillError], str]] = [
    (StorageFull, "the database is out of space; try again later"),
    (StoreUnavailable, "the database is unavailable; try again later"),
    (BrokerError, "the message broker is unavailable; try again later"),
    (StoreError, "internal error"),
]


def error_body(
    kind: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    fields = [{k: _encodable(v) for k, v in f.items()} for f in fields or []]
    return {"error": {"type": kind, "message": _encodable(message), "fields": fields}}


def _encodable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode escaped: a message may quote the input
    it refuses, and a lone surrogate in it would turn a 422 into a 500."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status: int,
    kind: str,
    message: str,
    fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(kind, message, fields), status_code=status, headers=headers)


def _taskmill_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskmillError)
    for kind, status, name in _STATUS:
        if isinstance(exc, kind):
            if isinstance(exc, ValidationError):
                fields = [{"field": exc.field, "reason": exc.reason}]
                return error_response(status, name, str(exc), fields)
            if isinstance(exc, QuotaExceeded):
                reason = f"at most {exc.limit} per merchant"
                return error_response(
                    status, name, str(exc), [{"field": exc.field, "reason": reason}]
                )
            if isinstance(exc, NotFound):
                # The same body whether it is missing or another merchant's (no oracle).
                return error_response(status, name, f"{exc.kind} not found")
            return error_response(status, name, _public_message(exc))
    return error_response(500, "internal_error", "internal error")


def _public_message(exc: TaskmillError) -> str:
    for kind, message in _INFRASTRUCTURE:
        if isinstance(exc, kind):
            log.warning("%s: %s", type(exc).__name__, exc)
            return message
    return str(exc)


def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return error_response(400, "malformed_json", "the body is not valid JSON")
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(location) or "body", "reason": _reason(error)})
    return error_response(422, "validation_error", "the request is invalid", fields)


def _reason(error: Any) -> str:
    """pydantic's message, without the ``Value error, `` it puts before our own."""
    cause = (error.get("ctx") or {}).get("error")
    if error.get("type") == "value_error" and isinstance(cause, ValueError):
        return str(cause)
    return str(error.get("msg"))


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        429: "too_many_requests",
    }
    headers = dict(exc.headers) if exc.headers else None
    return error_response(
        exc.status_code, kind.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
    )


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(TaskmillError, _taskmill_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
