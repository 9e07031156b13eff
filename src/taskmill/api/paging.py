"""Keyset paging for the list routes: opaque cursors over ``(created_at, id)``."""

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


def encode_cursor(item: Job | Template) -> str:
    """The keyset cursor after ``item`` (lists ordered by ``(created_at, id)``)."""
    raw = json.dumps([item.created_at.isoformat(), item.id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def keyset_page(found: Sequence[T], limit: int) -> tuple[Sequence[T], str | None]:
    """The page of ``found`` (fetched with ``limit + 1``) and the cursor of the next one."""
    page = found[:limit]
    return page, encode_cursor(page[-1]) if len(found) > limit else None


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, ident = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        # utc(): a naive or unrepresentable time (OverflowError) is no cursor of ours.
        return utc(datetime.fromisoformat(created)), str(ident)
    except (ValueError, TypeError, binascii.Error, ValidationError) as exc:
        raise ValidationError("cursor", "is not a cursor this API returned") from exc
