"""RELIABILITY.md S39: ``X-Forwarded-For`` does not bypass the failed-key limiter.

Through a real uvicorn server on loopback (``api_service``, as ``taskmill api`` serves),
since the forwarded headers are read by uvicorn, not by the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from taskmill.api.app import create_app
from taskmill.api.server import api_service
from taskmill.config import load_settings
from taskmill.core.errors import ConfigError
from tests.conftest import wait_for
from tests.e2e.test_cli import free_port
from tests.integration.api_fixtures import serve_api

LIMIT = 5  # api.auth_failures_per_minute in these tests
BAD_KEYS = 40


@asynccontextmanager
async def _served(sqlite_url: str, tmp_path: Path, **api: object) -> AsyncIterator[str]:
    """A real uvicorn server on loopback for an API with ``api`` settings; its base URL."""
    settings = {"auth_failures_per_minute": LIMIT, **api}
    async with serve_api(sqlite_url, tmp_path, api=settings) as holder:
        port = free_port()
        stop = asyncio.Event()
        serving = asyncio.create_task(
            api_service(create_app(holder.runtime), "127.0.0.1", port)(stop)
        )
        base = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{base}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await wait_for(up)
            yield base
        finally:
            stop.set()
            await serving


async def _statuses(base: str, forwarded: list[str]) -> list[int]:
    """One bad key per entry of ``forwarded``, each sent as that ``X-Forwarded-For``."""
    statuses = []
    async with httpx.AsyncClient(base_url=base) as client:
        for n, address in enumerate(forwarded):
            headers = {"x-api-key": f"tm_bad{n:04d}", "x-forwarded-for": address}
            statuses.append((await client.get("/jobs", headers=headers)).status_code)
    return statuses


def _rotating(count: int) -> list[str]:
    return [f"203.0.113.{n % 250 + 1}" for n in range(count)]


async def test_api_abuse_s39_forwarded_for_ignored_by_default(
    sqlite_url: str, tmp_path: Path
) -> None:
    """S39: 40 bad keys from loopback, each with a new X-Forwarded-For, default settings:
    401 up to the limit, 429 from then on (the header does not pick the address)."""
    async with _served(sqlite_url, tmp_path) as base:
        statuses = await _statuses(base, _rotating(BAD_KEYS))
    assert statuses == [401] * LIMIT + [429] * (BAD_KEYS - LIMIT)


async def test_api_abuse_s39_forwarded_for_ignored_from_an_untrusted_peer(
    sqlite_url: str, tmp_path: Path
) -> None:
    """With a proxy configured elsewhere, loopback's header is still not believed."""
    async with _served(sqlite_url, tmp_path, trusted_proxies=["10.9.8.7"]) as base:
        statuses = await _statuses(base, _rotating(BAD_KEYS))
    assert statuses == [401] * LIMIT + [429] * (BAD_KEYS - LIMIT)


async def test_api_abuse_s39_forwarded_for_honoured_from_a_trusted_proxy(
    sqlite_url: str, tmp_path: Path
) -> None:
    """With loopback as the trusted proxy, each forwarded client has its own budget: one
    client is limited after its failures, another client (same proxy) is not."""
    async with _served(sqlite_url, tmp_path, trusted_proxies=["127.0.0.0/8"]) as base:
        guesser = await _statuses(base, ["198.51.100.1"] * (LIMIT + 3))
        other = await _statuses(base, ["198.51.100.2"])
        # A client's own header, appended to by the proxy: only the right-most counts.
        spoofed = await _statuses(base, [f"198.51.100.{n}, 198.51.100.1" for n in range(3, 6)])
    assert guesser == [401] * LIMIT + [429] * 3
    assert other == [401]
    assert spoofed == [429] * 3


@pytest.mark.parametrize("entry", ["*", "not-an-ip", "10.0.0.0/33"])
def test_api_abuse_s39_trusted_proxies_checked(entry: str) -> None:
    with pytest.raises(ConfigError, match=r"api\.trusted_proxies"):
        load_settings("test", None, api={"trusted_proxies": [entry]})


def test_api_abuse_s39_trusted_proxies_normalised() -> None:
    """A network written with host bits still matches (uvicorn would treat it as a
    literal that matches nothing)."""
    settings = load_settings("test", None, api={"trusted_proxies": ["10.1.2.3/8", "::1"]})
    assert settings.api.trusted_proxies == ("10.0.0.0/8", "::1/128")
