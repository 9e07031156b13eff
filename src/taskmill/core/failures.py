"""Failed jobs grouped by their error: "timeout after 31s" and "timeout after 32s" are one
problem, so the error's first line is compared with its ids and numbers masked."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

# Longest first: a UUID or a long hex string is one token, not a run of numbers.
_MASKS = (
    (
        re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
        "<id>",
    ),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<n>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<id>"),
    (re.compile(r"\d+(?:[.,:]\d+)*"), "<n>"),
)
ERROR_HEAD_CHARS = 300
NO_ERROR = "(no error recorded)"


def error_key(error: str | None) -> str:
    """The group an error belongs to: its first non-empty line, at most
    ``ERROR_HEAD_CHARS`` characters, with UUIDs, hex ids and numbers masked."""
    key = first_line(error)
    if key == NO_ERROR:
        return key
    for pattern, mask in _MASKS:
        key = pattern.sub(mask, key)
    return key


def first_line(error: str | None) -> str:
    """The error's first non-empty line (at most ``ERROR_HEAD_CHARS`` characters)."""
    for line in (error or "").splitlines():
        if line.strip():
            return line.strip()[:ERROR_HEAD_CHARS]
    return NO_ERROR


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One failed job, as much of it as grouping needs."""

    id: str
    task_type: str
    last_error: str | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed jobs whose errors share a key: how many, of which task types, the newest
    one's time and error as written, and their ids (newest first, at most ``max_ids``)."""

    key: str
    count: int
    task_types: Sequence[str]
    newest_at: datetime | None
    example: str
    job_ids: Sequence[str]


def group_failures(failed: Iterable[FailedJob], *, max_ids: int) -> list[FailureGroup]:
    """``failed`` (newest first) grouped by :func:`error_key`, the largest group first
    (then the most recent)."""
    found: dict[str, list[FailedJob]] = {}
    for job in failed:
        found.setdefault(error_key(job.last_error), []).append(job)
    groups = [
        FailureGroup(
            key=key,
            count=len(members),
            task_types=sorted({m.task_type for m in members}),
            newest_at=members[0].finished_at,
            example=first_line(members[0].last_error),
            job_ids=[m.id for m in members[:max_ids]],
        )
        for key, members in found.items()
    ]
    return sorted(groups, key=lambda g: (-g.count, -_stamp(g.newest_at), g.key))


def _stamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else float("-inf")
