"""The operator's commands refuse numbers out of their bounds and empty reasons before
they open the database: Typer's usage error (exit 2) naming the option."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from taskmill.cli.main import cli

REFUSED = [
    (["jobs", "list", "--limit", "0"], "--limit"),
    (["jobs", "list", "--limit", "1001"], "--limit"),
    (["jobs", "list", "--status", "done"], "--status"),
    (["jobs", "show", "x", "--events", "101"], "--events"),
    (["jobs", "cancel", "x", "--reason", " "], "--reason"),
    (["jobs", "cancel", "x", "--reason", "r" * 1001], "--reason"),
    (["templates", "list", "--limit", "1001"], "--limit"),
    (["templates", "preview", "x", "--count", "0"], "--count"),
    (["templates", "preview", "x", "--count", "101"], "--count"),
    (["workers", "list", "--limit", "0"], "--limit"),
    (["events", "verify", "--batch-size", "10001"], "--batch-size"),
]


@pytest.mark.parametrize(
    ("args", "option"), REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_out_of_bounds_is_a_usage_error(args: list[str], option: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output
