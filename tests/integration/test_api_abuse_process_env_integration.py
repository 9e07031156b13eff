"""RELIABILITY.md S37: a ``process`` job's environment cannot make an allow-listed
program run the payload's code. Real bash and Python scripts, through the API.

Each attack is first run past the payload checks (``run_spec`` directly) to prove it
really writes the sentinel with these programs; then, through ``POST /jobs`` and a
worker, it is refused with a 422 naming the variable and the sentinel never appears.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.executors.process import ProcessExecutorConfig, ProcessSpec, run_spec
from taskmill.store.schema import jobs as jobs_table
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import api_client

BASH = "/bin/bash"
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"


def _attacks(sentinel: Path) -> list[tuple[str, dict[str, str], list[str]]]:
    """(id, env, the argv after the program) per attack; ``sentinel`` is what each writes."""
    touch = f"touch {sentinel}"
    return [
        ("bash-func", {"BASH_FUNC_date%%": f"() {{ {touch}; }}"}, ["script.sh"]),
        ("bash-env", {"BASH_ENV": str(sentinel.parent / "evil.sh")}, ["script.sh"]),
        ("env", {"ENV": str(sentinel.parent / "evil.sh")}, ["script.sh"]),
        (
            "pythonwarnings-browser",
            {"PYTHONWARNINGS": "ignore::antigravity.x", "BROWSER": f"/bin/sh -c '{touch}' #%s"},
            ["script.py"],
        ),
        ("pythonstartup", {"PYTHONSTARTUP": str(sentinel.parent / "evil.py")}, ["script.py"]),
        ("pythonpath", {"PYTHONPATH": str(sentinel.parent / "lib")}, ["script.py"]),
        ("perl5opt", {"PERL5OPT": f"-Mstrict;system('{touch}')"}, ["script.sh"]),
        ("node-options", {"NODE_OPTIONS": f"--require {sentinel.parent / 'evil.js'}"}, []),
        ("gconv-path", {"GCONV_PATH": str(sentinel.parent)}, ["script.sh"]),
        ("ld-preload", {"LD_PRELOAD": str(sentinel.parent / "evil.so")}, ["script.sh"]),
    ]


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    """An allow-listed bash script (calls ``date``) and a Python script (imports
    ``json``), plus the files the attacks point at; each of those writes the sentinel."""
    sentinel = tmp_path / "pwned"
    (tmp_path / "script.sh").write_text("date > /dev/null\necho bash-ok\n")
    (tmp_path / "script.py").write_text("import json\nprint('python-ok')\n")
    (tmp_path / "evil.sh").write_text(f"touch {sentinel}\n")
    (tmp_path / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "json.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n")
    return tmp_path


def _argv(program_args: list[str], directory: Path) -> list[str]:
    if not program_args:
        return [BASH, "-c", "true"]
    script = directory / program_args[0]
    return [PYTHON if script.suffix == ".py" else BASH, str(script)]


async def test_api_abuse_s37_attacks_are_real(scripts: Path) -> None:
    """Past the payload checks, these variables do run code in the allow-listed scripts
    (so the test below would see the sentinel if the API let them through)."""
    config = ProcessExecutorConfig(allowed_programs=(BASH, PYTHON), reap_orphans=False)
    sentinel = scripts / "pwned"
    effective = {"bash-func", "bash-env", "pythonwarnings-browser", "pythonpath"}
    for name, env, args in _attacks(sentinel):
        if name not in effective:
            continue
        program, *rest = _argv(args, scripts)
        spec = ProcessSpec(program, tuple(rest), {"PATH": "/usr/bin:/bin", **env}, str(scripts), 30)
        with contextlib.suppress(Exception):  # what follows the sentinel does not matter
            await run_spec(spec, config)
        assert sentinel.exists(), name
        sentinel.unlink()


@pytest.fixture
async def app(sqlite_url: str, scripts: Path) -> AsyncIterator[Taskmill]:
    settings = load_settings(
        "test",
        None,
        database={"url": sqlite_url},
        tasks={"max_retries": 0},
        api={"secret_key_file": str(scripts / "secret")},
        process={
            "enabled": True,
            "allowed_programs": [BASH, PYTHON],
            "allowed_env": ["REPORT_DATE"],
            "reap_orphans": False,
        },
    )
    application = Taskmill(settings=settings)
    yield application
    await application.stop()


async def _job_count(app: Taskmill) -> int:
    runtime = await app.open()
    async with runtime.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_table))).scalar_one())


async def test_api_abuse_s37_process_env_cannot_run_code(app: Taskmill, scripts: Path) -> None:
    """S37: every attack is a 422 naming the variable; no job is stored, the sentinel is
    never written; an allow-listed name still reaches both scripts."""
    sentinel = scripts / "pwned"
    async with api_client(app) as (client, headers):
        for name, env, args in _attacks(sentinel):
            payload: dict[str, Any] = {"argv": _argv(args, scripts), "env": env}
            response = await client.post(
                "/jobs", json={"task_type": "process", "payload": payload}, headers=headers
            )
            assert response.status_code == 422, (name, response.text)
            [field] = response.json()["error"]["fields"]
            assert field["field"] == "payload.env"
            assert any(variable in field["reason"] for variable in env), (name, field)
        assert await _job_count(app) == 0
        for script in ("script.sh", "script.py"):
            payload = {"argv": _argv([script], scripts), "env": {"REPORT_DATE": "2026-11-23"}}
            response = await client.post(
                "/jobs", json={"task_type": "process", "payload": payload}, headers=headers
            )
            assert response.status_code == 201, response.text
    await run_until_idle(app)
    assert not sentinel.exists()
    runtime = await app.open()
    async with runtime.db.read() as conn:
        results = (await conn.execute(select(jobs_table.c.result))).scalars().all()
    assert sorted(r["stdout"] for r in results) == ["bash-ok\n", "python-ok\n"]
