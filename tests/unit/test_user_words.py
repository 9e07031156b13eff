"""The words users see speak of taskmill, not of the specification it was built from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskmill.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SPEC_WORDS = re.compile(r"\bseed\s*0\d\d", re.I)
# The ADRs record why a decision was taken, citing the specification by design.
USER_FILES = [
    ROOT / "README.md",
    ROOT / ".env.example",
    *sorted(ROOT.glob("examples/*.py")),
    *sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file() and "adr" not in p.parts),
]
COMMANDS = [
    [],
    ["run"],
    ["api"],
    ["executor"],
    ["queue-populator"],
    ["failure-watcher"],
    ["recurrence-manager"],
    ["pruner"],
    ["prune"],
    ["db"],
    ["db", "upgrade"],
    ["api-keys"],
    ["jobs"],
    ["jobs", "list"],
    ["jobs", "show"],
    ["jobs", "cancel"],
    ["jobs", "retry"],
    ["templates"],
    ["templates", "preview"],
    ["queues", "list"],
    ["workers", "list"],
    ["events", "verify"],
    ["openapi"],
]


@pytest.mark.parametrize("path", USER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_files_do_not_speak_of_seeds(path: Path) -> None:
    assert not SPEC_WORDS.findall(path.read_text(errors="replace"))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "taskmill")
def test_cli_help_does_not_speak_of_seeds(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert not SPEC_WORDS.findall(result.output)
