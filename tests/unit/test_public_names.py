"""What user code needs is importable from ``taskmill`` itself; the examples and the
docs' code import nothing else of taskmill but its public modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import taskmill

ROOT = Path(__file__).resolve().parents[2]
# Modules meant for users besides the package itself: their tests' helpers, the
# settings loader for embedding taskmill with its own configuration, and the helpers
# for web frameworks.
PUBLIC_MODULES = {
    "taskmill",
    "taskmill.testing",
    "taskmill.config",
    "taskmill.integrations.fastapi",
}
IMPORT = re.compile(r"^\s*(?:from\s+(taskmill[\w.]*)\s+import|import\s+(taskmill[\w.]*))", re.M)


def _user_code() -> list[tuple[str, str]]:
    """(where, code) for every example and every Python block of the README and docs."""
    code = [(str(p.relative_to(ROOT)), p.read_text()) for p in sorted(ROOT.glob("examples/*.py"))]
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)):
            code.append((f"{doc.relative_to(ROOT)} block {i + 1}", block))
    return code


def test_every_public_name_resolves() -> None:
    for name in taskmill.__all__:
        assert getattr(taskmill, name) is not None, name


def test_the_names_users_need_are_public() -> None:
    needed = {"Taskmill", "TaskContext", "Retry", "Fail", "BackoffPolicy", "JobFilter"}
    needed |= {"JobStatus", "Job", "Template", "ValidationError", "NotFound", "Conflict"}
    assert needed <= set(taskmill.__all__)


USER_CODE = _user_code()


@pytest.mark.parametrize(("where", "code"), USER_CODE, ids=[where for where, _ in USER_CODE])
def test_user_code_imports_only_public_modules(where: str, code: str) -> None:
    imported = {a or b for a, b in IMPORT.findall(code)}
    assert imported <= PUBLIC_MODULES, f"{where} imports {sorted(imported - PUBLIC_MODULES)}"
