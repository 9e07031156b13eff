"""S30: the ``http`` task's SSRF guard against the plan's targets, a redirect to a sentinel
and DNS rebinding, through the API, a real worker and the guard's connect hook.

Network safety (RELIABILITY.md conventions): below the guard sits :class:`Recorder`, the
executor's ``network_backend``, which records every connection the guard lets through
and opens a real socket only to a loopback address (this test's servers); names are
resolved by :class:`FakeResolver`, never by DNS. So even a broken guard sends nothing
off the machine, and a loopback target it let through would be counted by the sentinel:
a TCP listener on 127.0.0.1:P, the port every target URL names.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import pytest

from taskmill import Taskmill
from taskmill.config import load_settings
from taskmill.core.errors import ValidationError
from taskmill.core.jobs import Job, JobStatus
from taskmill.executors.http_builtin import HttpExecutorConfig, http_task
from taskmill.executors.ssrf import AddressPolicy, AddressRefused, GuardedBackend, IPAddress
from taskmill.testing import run_until_idle
from tests.integration.api_fixtures import api_client
from tests.integration.local_http import serving
from tests.jobs import job_of

SERVER_HOST = "127.0.0.2"  # the allow-listed test server; the sentinel is on 127.0.0.1
ALLOWED = ("127.0.0.2/32",)
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
ATTEMPTS = 3

# The plan's targets (host part of http://HOST:P/); each is refused at creation (422
# naming payload.url) or before connecting.
HOSTS = [
    "127.0.0.1", "localhost", "0.0.0.0", "[::1]", "169.254.169.254",
    "metadata.google.internal", "10.0.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1",
    "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[64:ff9b::7f00:1]", "[fd00::1]",
    "[fe80::1]", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "user@127.0.0.1",
]  # fmt: skip
OTHER_SCHEMES = ["file:///etc/passwd", "gopher://127.0.0.1:{port}/_x", "ftp://127.0.0.1:{port}/"]
NAMES = {  # what the fake DNS answers; anything else does not resolve
    "localhost": ["127.0.0.1", "::1"],
    "metadata.google.internal": ["169.254.169.254"],
    "mixed.test": ["127.0.0.2", "127.0.0.1"],  # an allowed answer first, then loopback
}


@dataclass
class Recorder(httpcore.AsyncNetworkBackend):
    """Records each connection the guard attempts; opens a socket only to loopback."""

    attempts: list[tuple[str, int]] = field(default_factory=list)
    real: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if ipaddress.ip_address(host) not in LOOPBACK:
            raise httpcore.ConnectError(f"recording backend: no socket opened to {host}")
        return await self.real.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class FakeResolver:
    """Answers from :data:`NAMES`; ``rebind.test`` answers 127.0.0.2 the first time and
    127.0.0.1 (the sentinel) every time after (DNS rebinding)."""

    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host == "rebind.test":
            first = self.asked.count(host) == 1
            return [ipaddress.ip_address("127.0.0.2" if first else "127.0.0.1")]
        if host not in NAMES:
            raise httpcore.ConnectError(f"fake resolver: {host!r} does not resolve")
        return [ipaddress.ip_address(a) for a in NAMES[host]]


@dataclass
class Sentinel:
    port: int = 0
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


@pytest.fixture
async def sentinel() -> AsyncIterator[Sentinel]:
    counting = Sentinel()
    listener = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    counting.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield counting


@dataclass
class Setup:
    app: Taskmill
    recorder: Recorder
    resolver: FakeResolver


@pytest.fixture
async def setup(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    """A worker whose http task follows redirects, allows 127.0.0.2/32 only, and sits on
    the recorder and the fake resolver (the settings' own http task is off)."""
    recorder, resolver = Recorder(), FakeResolver()
    settings = load_settings(
        "test",
        None,
        database={"url": sqlite_url},
        http={"enabled": False},
        worker={"lease_seconds": 2.0, "heartbeat_seconds": 0.2},
        scheduler={"poll_interval_seconds": 0.05, "watcher_interval_seconds": 0.1},
        tasks={"max_retries": 0},
        api={"secret_key_file": str(tmp_path / "secret")},
    )
    app = Taskmill(settings=settings)
    config = HttpExecutorConfig(
        allowed_networks=ALLOWED,
        follow_redirects=True,
        max_attempts=ATTEMPTS,  # a refusal must end the job at attempt 1 all the same
        max_response_bytes=1000,
        network_backend=recorder,
        resolver=resolver,
    )
    app.registry.add(http_task(config))
    yield Setup(app, recorder, resolver)
    await app.stop()


async def _run(app: Taskmill, url: str) -> Job:
    job = await app.schedule("http", {"url": url})
    await run_until_idle(app)
    return await job_of(app, job.id)


async def _assert_blocked(app: Taskmill, done: Job, reason: str) -> None:
    """Failed with ``ssrf_blocked: <reason>…`` at its first attempt of several: one run,
    no retry scheduled."""
    assert done.status is JobStatus.FAILED, done.last_error
    assert (done.last_error or "").startswith(f"ssrf_blocked: {reason}"), done.last_error
    assert (done.attempt, done.max_attempts) == (1, ATTEMPTS)
    assert len(await app.runs(done.id)) == 1
    events = [e.type.value for e in await app.events(done.id)]
    assert "job.retry_scheduled" not in events and events[-1] == "job.failed"


async def test_reliability_s30_every_target_refused_nothing_connects(
    setup: Setup, sentinel: Sentinel
) -> None:
    """Each target through the API: 422 naming payload.url, or accepted (a name) and then
    failed ``ssrf_blocked`` at its first attempt, before any connection. 0 attempts, 0 at
    the sentinel."""
    urls = [f"http://{host}:{sentinel.port}/" for host in HOSTS]
    urls += [u.format(port=sentinel.port) for u in OTHER_SCHEMES]
    at_creation, at_connect = [], []
    async with api_client(setup.app) as (client, headers):
        for url in urls:
            body = {"task_type": "http", "payload": {"url": url}}
            response = await client.post("/jobs", json=body, headers=headers)
            if response.status_code == 422:
                [problem] = response.json()["error"]["fields"]
                assert problem["field"] == "payload.url", url
                at_creation.append(url)
                continue
            assert response.status_code == 201, (url, response.text)
            at_connect.append((url, response.json()["id"]))
    await run_until_idle(setup.app)
    for _, job_id in at_connect:
        done = await job_of(setup.app, job_id)
        await _assert_blocked(setup.app, done, "")
        assert "http.allowed_networks" in (done.last_error or ""), done.last_error
    # Only names get past creation (they are checked on connect, after resolving).
    assert sorted(url for url, _ in at_connect) == sorted(
        f"http://{name}:{sentinel.port}/" for name in ("localhost", "metadata.google.internal")
    )
    assert len(at_creation) + len(at_connect) == len(HOSTS) + len(OTHER_SCHEMES)
    assert setup.recorder.attempts == [] and sentinel.connections == 0


@pytest.mark.parametrize("host", [h for h in HOSTS if "@" not in h])
async def test_reliability_s30_guard_refuses_before_connecting(
    host: str, sentinel: Sentinel
) -> None:
    """The connect hook itself (what a redirect or a name reaches at run time): every
    target refused, the recording backend below it never called."""
    recorder = Recorder()
    guard = GuardedBackend(AddressPolicy.from_strings(ALLOWED), recorder, FakeResolver())
    with pytest.raises(AddressRefused):
        await guard.connect_tcp(host.strip("[]"), sentinel.port)
    assert recorder.attempts == [] and sentinel.connections == 0


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://127.0.0.1:{port}/", "redirect location refused: 127.0.0.1 is a loopback"),
        ("http://localhost:{port}/", "127.0.0.1 is a loopback"),  # the guard, on connect
        ("http://[::ffff:127.0.0.1]:{port}/", "redirect location refused: ::ffff:7f00:1"),
        ("http://2130706433:{port}/", "redirect location refused: 127.0.0.1 is a loopback"),
        ("http://169.254.169.254/latest/meta-data/", "redirect location refused: 169.254"),
        ("http://metadata.google.internal/computeMetadata/v1/", "169.254.169.254 is a link"),
        ("gopher://127.0.0.1:{port}/_x", "redirect location scheme must be http or https"),
        ("file:///etc/passwd", "redirect location scheme must be http or https"),
    ],
)
async def test_reliability_s30_redirect_to_sentinel_blocked(
    setup: Setup, sentinel: Sentinel, location: str, reason: str
) -> None:
    async with serving(SERVER_HOST) as server:
        target = location.format(port=sentinel.port)
        done = await _run(setup.app, server.url(f"/redirect?to={target}"))
        await _assert_blocked(setup.app, done, reason)
        assert len(server.requests) == 1  # the allowed hop happened, the next did not
    assert setup.recorder.attempts == [(SERVER_HOST, server.port)]
    assert sentinel.connections == 0


async def test_reliability_s30_dns_rebinding_blocked(setup: Setup, sentinel: Sentinel) -> None:
    """``rebind.test`` resolves to the allowed server first; the redirect back to the same
    name resolves to the sentinel: that connection is refused. A single answer holding an
    allowed and a loopback address is refused whole."""
    async with serving(SERVER_HOST, sentinel.port) as server:  # same port as the sentinel
        again = f"http://rebind.test:{sentinel.port}/ok"
        done = await _run(setup.app, f"http://rebind.test:{sentinel.port}/redirect?to={again}")
        await _assert_blocked(setup.app, done, "127.0.0.1 is a loopback")
        assert [r.path for r in server.requests] == [f"/redirect?to={again}"]
        mixed = await _run(setup.app, f"http://mixed.test:{sentinel.port}/ok")
        await _assert_blocked(setup.app, mixed, "127.0.0.1 is a loopback")
        assert len(server.requests) == 1  # the mixed answer reached nothing
    assert setup.resolver.asked == ["rebind.test", "rebind.test", "mixed.test"]
    assert setup.recorder.attempts == [(SERVER_HOST, sentinel.port)]
    assert sentinel.connections == 0


async def test_reliability_s30_allowed_server_works_and_body_capped(setup: Setup) -> None:
    """The control case: the allow-listed server is reached (so the refusals above are
    the guard's doing), and its 256 MiB body is cut at max_response_bytes."""
    async with serving(SERVER_HOST) as server:
        done = await _run(setup.app, server.url("/huge"))
        assert done.status is JobStatus.SUCCEEDED, done.last_error
        assert done.result["body"] == "x" * 1000 and done.result["truncated"] is True
    with pytest.raises(ValidationError):
        await setup.app.schedule("http", {"url": "http://[::1]/"})
