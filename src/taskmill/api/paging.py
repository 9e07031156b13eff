"""Keyset paging for the list routes: opaque cursors over ``(created_at, id)``; a jobs
cursor also carries the order it was made for (``asc``/``desc``)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import Query

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import Job
from taskmill.core.schedules import utc
from taskmill.core.templates import Template

T = TypeVar("T", Job, Template)

# A page's ``next_cursor``, passed back: opaque, but base64url text (anything else is no
# cursor of ours, and the document says so).
Cursor = Annotated[str | None, Query(max_length=500, pattern=r"^[A-Za-z0-9_-]*={0,2}$")]


ORDERS = ("asc", "desc")


def encode_cursor(item: Job | Template, order: str | None = None) -> str:
    """The keyset cursor after ``item`` (lists ordered by ``(created_at, id)``), naming
    ``order`` when the list has a choice of order."""
    key: list[str] = [item.created_at.isoformat(), item.id]
    raw = json.dumps(key if order is None else [*key, order]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def keyset_page(
    found: Sequence[T], limit: int, order: str | None = None
) -> tuple[Sequence[T], str | None]:
    """The page of ``found`` (fetched with ``limit + 1``) and the cursor of the next one."""
    page = found[:limit]
    return page, encode_cursor(page[-1], order) if len(found) > limit else None


def decode_cursor(cursor: str, order: str | None = None) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor holds; 422 naming ``cursor`` for anything this
    API did not return for this list and, with ``order``, for this order. A jobs cursor
    without an order was made before the list had one: oldest first."""
    try:
        created, ident, *rest = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        # utc(): a naive or unrepresentable time (OverflowError) is no cursor of ours.
        key = utc(datetime.fromisoformat(created)), str(ident)
        made_for = rest[0] if rest else "asc"
        if len(rest) > 1 or (rest and order is None) or made_for not in ORDERS:
            raise ValueError("not a cursor of this list")
    except (ValueError, TypeError, binascii.Error, ValidationError) as exc:
        raise ValidationError("cursor", "is not a cursor this API returned") from exc
    if order is not None and made_for != order:
        raise ValidationError(
            "cursor", f"was returned for order={made_for}; pass the same order to page on"
        )
    return key
