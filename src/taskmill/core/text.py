"""Text that can be stored: every string taskmill writes must encode as UTF-8 and hold
no NUL character.

A lone surrogate (``"\\ud800"``, valid in a JSON string and in a Python ``str``) cannot be
encoded: SQLite stored it and every later read of the row failed; PostgreSQL refuses it
and NUL (in ``text`` and ``jsonb``). So both are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskmill.core.errors import ValidationError

NUL_REASON = "contains a NUL character (\\u0000), which cannot be stored"


def unstorable(value: str) -> str | None:
    """Why ``value`` cannot be stored, or ``None`` if it can."""
    if "\x00" in value:
        return NUL_REASON
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        return f"contains a lone surrogate (\\u{code:04x}) at {exc.start}: not valid UTF-8"
    return None


def check_text(field: str, value: str | None) -> None:
    """Raise ``ValidationError(field, …)`` if ``value`` cannot be stored."""
    if value is not None and (reason := unstorable(value)) is not None:
        raise ValidationError(field, reason)


def check_json(field: str, value: Any) -> None:
    """Check every string of a JSON-like ``value``, object keys included; the error names
    the path (``payload.headers.X-Token``, ``payload.items[3]``)."""
    stack: list[tuple[str, Any]] = [(field, value)]
    while stack:  # a loop, not recursion: a library caller's payload has no depth limit
        path, item = stack.pop()
        if isinstance(item, str):
            check_text(path, item)
        elif isinstance(item, Mapping):
            for key, child in item.items():
                if isinstance(key, str):
                    check_text(f"{path} (a key)", key)
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
