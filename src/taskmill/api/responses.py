"""The error statuses each operation declares in the OpenAPI document, in one line per route.

``responses=errors(404, 409, *WRITE)`` on a decorator declares those statuses with the
error body every one of them carries (:mod:`taskmill.api.errors`), so a client generated
from the document knows every answer it can get.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FieldError(BaseModel):
    field: str = Field(description="The field, parameter or header at fault (dotted path).")
    reason: str


class ErrorDetail(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. `validation_error`.")
    message: str
    fields: list[FieldError]


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"type", "message", "fields"}}``."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "The body is not acceptable JSON (malformed, NaN, duplicate keys, too deep).",
    401: "The API key is missing or not valid.",
    403: "The key lacks the scope this operation needs.",
    404: "No such resource for this key's merchant.",
    409: "The request conflicts with the resource's state.",
    413: "The body exceeds `api.max_body_bytes`.",
    415: "The body is not `application/json`.",
    422: "A field, parameter or the path is invalid (each one named in `fields`).",
    429: "Too many failed authentications, or the merchant is over its request rate.",
    503: "The database (or broker) is unavailable; try again.",
    507: "The database is full.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string"},
    }
}

# Every route: a NUL in the path or query string is refused (api.limits).
ANY = (422,)
# Every route that takes an API key.
AUTHENTICATED = (401, 403, 422, 429, 503)
# Every route that takes a JSON body (checked before the route runs).
BODY = (400, 413, 415, 422)
# Every route that writes.
WRITE = (*AUTHENTICATED, 507)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route answering these error statuses (repeats are fine)."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        response: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status == 429:
            response["headers"] = _RETRY_AFTER
        declared[status] = response
    return declared
