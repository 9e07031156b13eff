"""RELIABILITY.md S40 (concurrent idempotent creates on PostgreSQL) and issue 18's
"no error body carries database internals", /readyz included, with the database
really unreachable (a loopback TCP relay to PostgreSQL, then cut)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import func, select

from taskmill.store import schema
from tests.integration.api_fixtures import Api, serve_api
from tests.relay import PostgresRelay

ROUNDS = 10
CONCURRENT = 20
# Text a body must never hold: the driver's, the SQL's, the schema's.
INTERNALS = (
    "duplicate key",
    "constraint",
    "uq_",
    "violates",
    "asyncpg",
    "sqlalchemy",
    "postgres",
    "psycopg",
    "connect call",
    "errno",
    "select ",
    "insert ",
)


def _leaks(body: str, *more: str) -> list[str]:
    lowered = body.lower()
    return [needle for needle in (*INTERNALS, *more) if needle.lower() in lowered]


@pytest.fixture
async def pg_api(postgres_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async with serve_api(postgres_url, tmp_path) as holder:
        yield holder


async def test_api_abuse_s40_concurrent_idempotent_creates(pg_api: Api) -> None:
    """S40: per round, 20 concurrent POST /jobs with one new key: exactly one 201 and
    19 x 200, all naming the same job; one job per key; no 409, no database text."""
    api = pg_api
    for _ in range(ROUNDS):
        key = f"order-{uuid.uuid4()}"
        body = {"task_type": "echo", "payload": {"n": 1}, "idempotency_key": key}
        responses = await asyncio.gather(
            *(api.client.post("/jobs", json=body, headers=api.a) for _ in range(CONCURRENT))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * (CONCURRENT - 1) + [201], [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert not [leak for r in responses if (leak := _leaks(r.text))]
        async with api.runtime.db.read() as conn:
            stmt = select(func.count()).where(schema.jobs.c.idempotency_key == key)
            assert (await conn.execute(stmt)).scalar_one() == 1


async def test_api_abuse_unreachable_database_bodies_hold_no_internals(
    postgres_url: str, tmp_path: Path
) -> None:
    """With the database unreachable: /readyz (no key) is a 503 and /jobs a 503, and
    neither body names the host, the port, the user or the driver."""
    parts = urlsplit(postgres_url)
    relay = PostgresRelay(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await relay.start()
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port}"
    relayed = urlunsplit(parts._replace(netloc=netloc))
    async with serve_api(relayed, tmp_path) as api:
        assert (await api.client.get("/readyz")).status_code == 200
        await relay.cut()
        ready = await api.client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json() == {"status": "unavailable", "reason": "the database is unavailable"}
        for path in ("/jobs", "/events"):
            response = await api.client.get(path, headers=api.a)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["type"] == "unavailable"
            assert not _leaks(response.text, str(port), "127.0.0.1"), response.text
        created = await api.client.post("/jobs", json={"task_type": "echo"}, headers=api.a)
        assert created.status_code == 503 and not _leaks(created.text, str(port))
