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
]


def error_body(
    kind: str, message: str, fields: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "fields": fields or []}}


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
            return error_response(status, name, str(exc))
    return error_response(500, "internal_error", "internal error")


def _request_validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return error_response(400, "malformed_json", "the body is not valid JSON")
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        fields.append({"field": ".".join(location) or "body", "reason": str(error.get("msg"))})
    return error_response(422, "validation_error", "the request is invalid", fields)


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
