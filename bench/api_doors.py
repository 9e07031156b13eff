"""What a REST API user feels on an embedded ``taskmill run``: a job created through
``POST /jobs`` until it succeeded, and ``POST /jobs/{id}/cancel`` until the running
handler stopped (issue 19's targets: 50 ms median and 1 s).

Run from the project root::

    .venv/bin/python -m bench.api_doors [--jobs 20] [--cancels 5] [--database-url URL]

It starts ``taskmill run --app bench.api_doors:app`` on a free port (SQLite in a scratch
folder unless ``--database-url`` names a PostgreSQL database), creates an admin key,
sends the jobs one at a time (each waits for the previous one to finish, as a user
clicking would), then starts the slow jobs one at a time and cancels each once it runs.
It prints figures and never asserts on them; it always stops the process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from taskmill import TaskContext, Taskmill

app = Taskmill()
CLI = [sys.executable, "-c", "from taskmill.cli.main import main; main()"]


@app.task("noop")
async def noop(ctx: TaskContext, payload: Any) -> None:
    return None


@app.task("sleep_until_cancelled", max_retries=0)
async def sleep_until_cancelled(ctx: TaskContext, payload: dict[str, str]) -> None:
    try:
        await asyncio.sleep(600)
    finally:  # the moment the handler stopped, on this machine's monotonic clock
        stopped = repr(time.monotonic())
        await asyncio.to_thread(Path(payload["marker"]).write_text, stopped)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taskmill(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _until(client: httpx.AsyncClient, job_id: str, status: str) -> None:
    """Poll the job every 2 ms (what a user's client would see, with a tight poll)."""
    while (await client.get(f"/jobs/{job_id}")).json()["status"] != status:  # noqa: ASYNC110
        await asyncio.sleep(0.002)


async def _measure(base: str, key: str, jobs: int, cancels: int, scratch: Path) -> None:
    headers = {"x-api-key": key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        done_ms = []
        for _ in range(jobs):
            started = time.monotonic()
            made = (await client.post("/jobs", json={"task_type": "noop"})).json()
            await _until(client, made["id"], "succeeded")
            done_ms.append((time.monotonic() - started) * 1000)
        stop_ms = []
        for i in range(cancels):
            marker = scratch / f"stopped-{i}"
            body = {"task_type": "sleep_until_cancelled", "payload": {"marker": str(marker)}}
            made = (await client.post("/jobs", json=body)).json()
            await _until(client, made["id"], "running")
            asked = time.monotonic()
            await client.post(f"/jobs/{made['id']}/cancel", json={"reason": "bench"})
            while not marker.exists() or not marker.read_text():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            stop_ms.append((float(marker.read_text()) - asked) * 1000)
    print(f"POST /jobs -> succeeded, {jobs} jobs one at a time: {_figures(done_ms)}")
    print(f"POST /jobs/{{id}}/cancel -> handler stopped, {cancels} jobs: {_figures(stop_ms)}")


def _figures(ms: list[float]) -> str:
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--cancels", type=int, default=5)
    parser.add_argument("--database-url", help="default: SQLite in a scratch folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        port = _free_port()
        env = {
            **os.environ,
            "TASKMILL_DATABASE__URL": args.database_url or f"sqlite:///{scratch / 'bench.db'}",
            "TASKMILL_API__SECRET_KEY_FILE": str(scratch / "secret"),
            "TASKMILL_API__PORT": str(port),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])
            ),
        }
        key = subprocess.run(
            [*CLI, "api-keys", "create", "--admin", "--name", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        server = _taskmill(env, "run", "--app", "bench.api_doors:app")
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            asyncio.run(_measure(base, key, args.jobs, args.cancels, scratch))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
