"""The README's library program runs as it is written: jobs run, it stops cleanly, and a
second run does the same (it leaves nothing behind that piles up)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _library_program() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it as a library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's library section has no Python block"
    return match.group(1)


def test_readme_library_program_runs_and_stops(tmp_path: Path) -> None:
    program = tmp_path / "readme_app.py"
    program.write_text(_library_program())
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(program)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines() == [
            "send_email succeeded {'sent': True}",
            "resize succeeded {'resized': 7}",
        ]
    assert (tmp_path / "taskmill.db").exists()
