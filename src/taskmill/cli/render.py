"""How the operator's read commands print: a table on a terminal, tab-separated lines
with a header when piped, one JSON document with ``--json`` (stable keys, ISO 8601 times,
``null`` for what is not set)."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON document (stable keys, ISO 8601 times)."),
]


def plain(value: Any) -> Any:
    """``value`` as JSON: times in ISO 8601, enums as their values, records as objects."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


def age(seconds: float) -> str:
    """``seconds`` for a person: ``42s``, ``3m 05s``, ``2h 10m``, ``4d 3h``."""
    whole = max(0, int(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, ensure_ascii=False))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """``rows`` under ``columns``: a rich table on a terminal (a cell too wide wraps,
    never cut: ids must stay whole), else tab-separated lines with a header."""
    if sys.stdout.isatty():
        # Here, not at the top: every taskmill process imports the CLI, few print tables.
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(box=box.SIMPLE_HEAD)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # no markup from stored text
        Console().print(table)
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))


def print_fields(pairs: Sequence[tuple[str, str]]) -> None:
    """One ``name: value`` line each, names aligned."""
    width = max((len(name) for name, _ in pairs), default=0)
    for name, value in pairs:
        typer.echo(f"{name + ':':<{width + 1}} {value}")


def text(value: object) -> str:
    """A cell: ``-`` for nothing, ISO 8601 to the second for a time, an enum's value,
    JSON for what is not a string or a number."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        # Tables show seconds (``--json`` keeps every digit); UTC as ``Z``.
        whole = value.replace(microsecond=0)
        if whole.utcoffset() == timedelta(0):
            return whole.strftime("%Y-%m-%dT%H:%M:%SZ")
        return whole.isoformat()
    if isinstance(value, enum.Enum | int | float):
        return str(plain(value))
    return json.dumps(plain(value), ensure_ascii=False)
