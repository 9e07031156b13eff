"""RELIABILITY.md S19, S26 and S27 against a real ``taskmill api`` process (uvicorn, real
sockets on loopback), measured from outside through ``/proc``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from taskmill.core.clock import SystemClock
from taskmill.core.tenants import Scope
from taskmill.services.api_keys import ApiKeys
from taskmill.store import schema, tenants
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from tests.e2e.test_cli import ROOT, _taskmill, free_port
from tests.plan import plan_size, sized

SECRET = "e2e-abuse-hmac-secret-0123456789abcdef"
MiB = 1024 * 1024
log = logging.getLogger(__name__)  # the figures (shown with -o log_cli=true)


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    db: Database
    keys: dict[str, dict[str, str]]  # merchant name -> headers
    merchants: dict[str, str]  # merchant name -> id

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


@contextmanager
def _process(url: str, port: int, log: Path, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env.pop("DATABASE_URL", None)
    env.update(
        TASKMILL_DATABASE__URL=url,
        TASKMILL_API__PORT=str(port),
        TASKMILL_API__SECRET_KEY=SECRET,
        TASKMILL_LOGGING__LEVEL="WARNING",
        **{f"TASKMILL_API__{k.upper()}": v for k, v in settings.items()},
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _taskmill("api", "--app", "tests.fixtures.apps:app"),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@asynccontextmanager
async def serve(url: str, tmp_path: Path, **settings: str) -> AsyncIterator[Served]:
    """``taskmill api`` on ``url``, with merchants ``a`` and ``b`` and a key for each."""
    db = Database.from_url(url)
    keys = ApiKeys(store_for(db), SystemClock(), SECRET.encode())
    merchants, headers = {}, {}
    now = SystemClock().now()
    for name in ("a", "b"):
        merchant = await tenants.create_merchant(db, f"merchant {name}", now=now)
        scopes = [Scope.JOBS_READ, Scope.JOBS_WRITE]
        issued = await keys.issue(merchant.id, name, scopes, actor="test")
        merchants[name], headers[name] = merchant.id, {"x-api-key": issued.plaintext}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with _process(url, port, tmp_path / "api.log", **settings) as proc:
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient() as client:
                while True:
                    try:
                        if (await client.get(f"{base}/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.poll() is None, (tmp_path / "api.log").read_text()
                    assert time.monotonic() < deadline, "taskmill api did not start in 30 s"
                    await asyncio.sleep(0.1)
            yield Served(base, proc, db, headers, merchants)
    finally:
        await db.close()


async def _jobs_of(served: Served, merchant: str) -> int:
    async with served.db.read() as conn:
        stmt = select(func.count()).where(schema.jobs.c.merchant_id == served.merchants[merchant])
        count: int = (await conn.execute(stmt)).scalar_one()
        return count


# --- S19 -------------------------------------------------------------------------------


async def _huge(client: httpx.AsyncClient, served: Served, chunked: bool) -> httpx.Response:
    head = b'{"task_type": "sleepy", "payload": {"data": "'
    filler = b"x" * MiB
    headers = served.keys["a"] | {"content-type": "application/json"}
    if not chunked:
        body = head + filler * 10 + b'"}}'
        return await client.post(f"{served.base}/jobs", content=body, headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for _ in range(10):
            yield filler
        yield b'"}}'

    return await client.post(f"{served.base}/jobs", content=chunks(), headers=headers)


@pytest.mark.slow
async def test_api_abuse_s19_huge_payloads_bounded_memory(sqlite_url: str, tmp_path: Path) -> None:
    """S19: 10 MiB bodies with the limit at 1 MiB -> 413 with the JSON error body (the
    field is ``body``: the limit applies before parsing), also chunked without
    Content-Length; the API's RSS grows < 20 MiB over 50 such requests; a 512 KiB
    payload round-trips byte-identical through the real server."""
    async with serve(sqlite_url, tmp_path) as served:
        async with httpx.AsyncClient(timeout=60) as client:
            for n in range(5):  # warm-up: allocator pools, first-use imports
                await _huge(client, served, chunked=n % 2 == 1)
            baseline = served.rss_kib()
            for n in range(50):
                response = await _huge(client, served, chunked=n % 2 == 1)
                assert response.status_code == 413, response.text[:200]
                error = response.json()["error"]
                assert error["type"] == "payload_too_large"
                assert error["fields"][0]["field"] == "body"
                if n % 2:
                    assert "content-length" not in response.request.headers
            growth = served.rss_kib() - baseline
            log.info(f"S19: RSS baseline {baseline} KiB, growth over 50 x 10 MiB: {growth} KiB")
            assert growth < 20 * 1024
            payload = 'é\u2603\U0001f600\\"\n' * (512 * 1024 // 12)
            created = await client.post(
                f"{served.base}/jobs",
                json={"task_type": "sleepy", "payload": {"data": payload}},
                headers=served.keys["a"],
            )
            assert created.status_code == 201, created.text[:200]
            got = await client.get(
                f"{served.base}/jobs/{created.json()['id']}", headers=served.keys["a"]
            )
            assert got.json()["payload"]["data"] == payload
        assert await _jobs_of(served, "a") == 1  # the 55 rejected bodies wrote nothing


# --- S26 -------------------------------------------------------------------------------

RATE, BURST = 12.0, 12  # B sends 10 req/s: under its quota; the flood is >= 10x it
FLOOD_SECONDS = sized(8.0, 30.0)
DROPPED = 0  # a_status key of A's requests whose connection closed before a response
FLOOD_REQUESTS = sized(4000, 20000)  # the bound on A's requests: the test always ends


@pytest.mark.slow
@plan_size
async def test_api_abuse_s26_request_flood_per_merchant_quota(
    database_url: str, tmp_path: Path
) -> None:
    """S26: tenant A floods POST /jobs from 32 concurrent connections for 8 s (30 s in the
    plan-size step; bounded at 4,000 or 20,000 requests, far over its 12 req/s quota):
    its 429s carry Retry-After and the error
    body, and its accepted jobs (exact count from the database) never exceed
    burst + rate x elapsed; tenant B at 10 req/s meanwhile gets >= 99 % 2xx; 0 x 5xx;
    the API's RSS is back within 10 % of its baseline within 30 s."""
    settings = {
        "requests_per_second_per_merchant": str(RATE),
        "request_burst_per_merchant": str(BURST),
    }
    async with serve(database_url, tmp_path, **settings) as served:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with (
            httpx.AsyncClient(timeout=30, limits=limits) as flood,
            httpx.AsyncClient(timeout=30) as calm,
        ):
            for _ in range(10):  # warm-up, within B's quota
                await calm.get(f"{served.base}/jobs", headers=served.keys["b"])
            await asyncio.sleep(1.5)  # B's bucket refills
            baseline = served.rss_kib()
            a_status: dict[int, int] = {}
            retry_after_ok = True
            sent = 0
            started = time.monotonic()
            stop_at = started + FLOOD_SECONDS

            async def attacker() -> None:
                nonlocal sent, retry_after_ok
                while time.monotonic() < stop_at and sent < FLOOD_REQUESTS:
                    sent += 1
                    try:
                        response = await flood.post(
                            f"{served.base}/jobs",
                            json={"task_type": "sleepy", "payload": {}},
                            headers=served.keys["a"],
                        )
                    except httpx.TransportError:
                        # The flood's connections may be dropped (a server-side close was
                        # seen in ~1 of 4 runs on PostgreSQL); counted, and B must not see it.
                        a_status[DROPPED] = a_status.get(DROPPED, 0) + 1
                        continue
                    a_status[response.status_code] = a_status.get(response.status_code, 0) + 1
                    if response.status_code == 429:
                        retry_after_ok &= int(response.headers.get("retry-after", "0")) >= 1
                        retry_after_ok &= response.json()["error"]["type"] == "too_many_requests"

            b_status: list[int] = []
            b_latency: list[float] = []

            async def b_request() -> None:
                t0 = time.monotonic()
                response = await calm.post(
                    f"{served.base}/jobs",
                    json={"task_type": "sleepy", "payload": {}},
                    headers=served.keys["b"],
                )
                b_latency.append(time.monotonic() - t0)
                b_status.append(response.status_code)

            async def tenant_b() -> None:
                """Arrivals at 10 per second, whatever the latency (open model)."""
                tick, sent_b = time.monotonic(), []
                while tick < stop_at:
                    sent_b.append(asyncio.create_task(b_request()))
                    tick += 0.1
                    await asyncio.sleep(max(0.0, tick - time.monotonic()))
                await asyncio.gather(*sent_b)

            await asyncio.gather(tenant_b(), *(attacker() for _ in range(32)))
            elapsed = time.monotonic() - started
        accepted = await _jobs_of(served, "a")
        b_ok = sum(200 <= s < 300 for s in b_status)
        b_latency.sort()
        p95 = b_latency[int(len(b_latency) * 0.95) - 1] if b_latency else 0.0
        log.info(
            f"S26: A sent {sent} in {elapsed:.1f} s ({sent / elapsed / RATE:.0f}x its quota): "
            f"{a_status}; A's jobs {accepted} "
            f"(cap {BURST + RATE * elapsed:.0f}); B {b_ok}/{len(b_status)} 2xx, p95 {p95:.3f} s"
        )
        assert all(s < 500 for s in a_status) and all(s < 500 for s in b_status)
        # A dropped request may have been stored before its connection closed.
        assert a_status.get(201, 0) <= accepted <= a_status.get(201, 0) + a_status.get(DROPPED, 0)
        assert accepted <= BURST + RATE * elapsed
        assert a_status.get(429, 0) > 0 and retry_after_ok
        assert len(b_status) >= 9 * FLOOD_SECONDS and b_ok >= 0.99 * len(b_status), b_status
        deadline = time.monotonic() + 30
        while served.rss_kib() > baseline * 1.10:
            assert time.monotonic() < deadline, (served.rss_kib(), baseline)
            await asyncio.sleep(1)
        log.info(f"S26: RSS baseline {baseline} KiB, after {served.rss_kib()} KiB")


# --- S27 -------------------------------------------------------------------------------

# The request-receipt deadline and the slow clients' pace: the plan's 15 s and one byte
# every 10 s in the plan-size step, 3 s and one byte a second otherwise.
READ_TIMEOUT = sized(3.0, 15.0)
DRIP_SECONDS = sized(1.0, 10.0)
GIVE_UP = READ_TIMEOUT + DRIP_SECONDS + 10  # a connection still open then: never closed
SLOW_HEADERS, SLOW_BODIES = sized(100, 300), sized(20, 50)


async def _slow_client(port: int, request: bytes, drip: bytes) -> float | None:
    """Send ``request`` then ``drip`` one byte every ``DRIP_SECONDS``; seconds until the
    server closed the connection (``None``: still open after ``GIVE_UP``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(request)
        for byte in drip:
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=DRIP_SECONDS)
                if not data:
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except (ConnectionError, OSError):
                return time.monotonic() - started
            if time.monotonic() - started > GIVE_UP:
                return None
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionError, OSError):
                return time.monotonic() - started
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


@pytest.mark.slow
@plan_size
async def test_api_abuse_s27_slowloris_connections_closed(sqlite_url: str, tmp_path: Path) -> None:
    """S27: 100 connections dripping one header byte a second, 20 POSTs dripping their
    body, 10 connections sending nothing (in the plan-size step: 300 and 50 connections,
    one byte every 10 s): every one is closed within the request-read deadline (3 s, or
    the plan's 15 s; + 2 s slack); a normal client gets 100 % 2xx throughout; the API's
    open fds are back to baseline +- 10 within 30 s."""
    settings = {"request_read_timeout_seconds": str(READ_TIMEOUT)}
    async with serve(sqlite_url, tmp_path, **settings) as served:
        port = int(served.base.rsplit(":", 1)[1])
        key = served.keys["a"]["x-api-key"]
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(f"{served.base}/jobs", headers=served.keys["a"])
            baseline = served.fds()
            slow_header = (b"GET /jobs HTTP/1.1\r\nHost: x\r\n", b"x-api-key: " + key.encode() * 3)
            slow_body = (
                b"POST /jobs HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"x-api-key: " + key.encode() + b"\r\ncontent-length: 500\r\n\r\n",
                b'{"task_type": "sleepy", "payload": "' + b"x" * 400,
            )
            attackers = [
                *(_slow_client(port, *slow_header) for _ in range(SLOW_HEADERS)),
                *(_slow_client(port, *slow_body) for _ in range(SLOW_BODIES)),
            ]
            normal: list[int] = []
            normal_latency: list[float] = []
            done = asyncio.Event()

            async def normal_client() -> None:
                while not done.is_set():
                    sent_at = time.monotonic()
                    response = await client.get(f"{served.base}/jobs", headers=served.keys["a"])
                    normal_latency.append(time.monotonic() - sent_at)
                    normal.append(response.status_code)
                    await asyncio.sleep(0.2)

            async def silent_client() -> float | None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                started = time.monotonic()
                try:
                    data = await asyncio.wait_for(reader.read(1), timeout=GIVE_UP)
                    return time.monotonic() - started if not data else None
                except (ConnectionError, OSError):
                    return time.monotonic() - started
                except TimeoutError:
                    return None
                finally:
                    writer.close()

            watcher = asyncio.create_task(normal_client())
            peak_fds = 0

            async def peak() -> None:
                nonlocal peak_fds
                while not done.is_set():
                    peak_fds = max(peak_fds, served.fds())
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(peak())
            closed = await asyncio.gather(*attackers, *(silent_client() for _ in range(10)))
            done.set()
            await watcher
            await sampler
        normal_latency.sort()
        p95 = normal_latency[int(len(normal_latency) * 0.95) - 1] if normal_latency else 0.0
        log.info(
            f"S27: {len(closed)} slow connections closed after max "
            f"{max(c or 99 for c in closed):.1f} s (deadline {READ_TIMEOUT:g} s); fds baseline "
            f"{baseline}, peak {peak_fds}; normal client {len(normal)} requests, p95 {p95:.3f} s"
        )
        assert all(c is not None and c <= READ_TIMEOUT + 2 for c in closed), sorted(
            (c or 99) for c in closed
        )[-5:]
        assert normal and all(s == 200 for s in normal)
        deadline = time.monotonic() + 30
        while abs(served.fds() - baseline) > 10:
            assert time.monotonic() < deadline, (served.fds(), baseline)
            await asyncio.sleep(0.5)
        assert await _jobs_of(served, "a") == 0  # no slow body became a job
