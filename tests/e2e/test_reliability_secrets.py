"""S34 across real service processes: the database and broker passwords and the API keys
never reach a log line (DEBUG included), the event log, an API response or /metrics —
also when a broker refuses a wrong password (RELIABILITY.md S34; the in-process half is
``test_api_abuse_integration.py::test_api_abuse_s34_secrets_never_leak``)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from taskmill.core.clock import SystemClock
from taskmill.core.tenants import Scope
from taskmill.services.api_keys import ApiKeys
from taskmill.store import schema, tenants
from taskmill.store.database import Database
from taskmill.store.drivers import store_for
from tests import backends
from tests.conftest import wait_for
from tests.e2e.cluster import cluster
from tests.e2e.conftest import Broker
from tests.e2e.test_cli import free_port
from tests.e2e.test_faults import _succeeded

pytestmark = pytest.mark.slow


async def _broker_user(kind: str, user: str, password: str) -> None:
    """A broker account that exists only for this test, with ``password``."""
    if kind == "redis":
        client = aioredis.Redis.from_url(backends.REDIS_URL)
        try:
            await client.acl_setuser(
                user,
                enabled=True,
                reset=True,
                passwords=[f"+{password}"],
                keys=["*"],
                channels=["*"],
                categories=["+@all"],
            )
        finally:
            await client.aclose()
    else:
        backends.rabbitmqctl("add_user", user, password)
        backends.rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")


async def _drop_broker_user(kind: str, user: str) -> None:
    if kind == "redis":
        client = aioredis.Redis.from_url(backends.REDIS_URL)
        try:
            await client.acl_deluser(user)
        finally:
            await client.aclose()
    else:
        backends.rabbitmqctl("delete_user", user)


def _broker_url(kind: str, user: str, password: str, prefix: str) -> str:
    if kind == "redis":
        return f"redis://{user}:{password}@127.0.0.1:6379/0?client_name={prefix}"
    return f"amqp://{user}:{password}@127.0.0.1:5672/?name={prefix}"


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(postgres_url)
    try:
        yield database
    finally:
        await database.close()


async def test_reliability_s34_passwords_and_keys_never_leak_from_the_services(
    postgres_url: str, db: Database, broker: Broker, tmp_path: Path
) -> None:
    """S34: every service process (API, populator, watcher, recurrence manager, two
    executors, one of them given a wrong broker password) logs at DEBUG while jobs run,
    fail and are listed; afterwards no log, stored row, API response or /metrics page
    holds the database password, either broker password or any API key."""
    user = f"s34-{uuid.uuid4().hex[:8]}"
    broker_password = "s34-broker-" + secrets.token_hex(8)
    wrong_password = "s34-wrong-" + secrets.token_hex(8)
    db_password = "s34-db-" + secrets.token_hex(8)
    hmac_secret = "s34-hmac-" + secrets.token_hex(24)
    # Trust authentication: PostgreSQL accepts any password, so the URL can carry one.
    database_url = postgres_url.replace("postgres@", f"postgres:{db_password}@", 1)
    assert db_password in database_url
    (tmp_path / "secret").write_text(hmac_secret)
    keys = ApiKeys(store_for(db), SystemClock(), hmac_secret.encode())
    merchant = await tenants.create_merchant(db, "s34", now=SystemClock().now())
    writer = await keys.issue(merchant.id, "w", [Scope.JOBS_READ, Scope.JOBS_WRITE], actor="t")
    admin = await keys.issue(merchant.id, "a", [Scope.ADMIN], actor="t")
    api_keys = [writer.plaintext, admin.plaintext]
    await _broker_user(broker.kind, user, broker_password)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    seen: list[bytes] = []
    try:
        with cluster(database_url, "", tmp_path) as c:
            c.broker_url = _broker_url(broker.kind, user, broker_password, c.prefix)
            debug = {"TASKMILL_LOGGING__LEVEL": "DEBUG"}
            for service in ("queue-populator", "failure-watcher", "recurrence-manager"):
                c.start(service, **debug)
            c.start("executor", **debug)
            refused = _broker_url(broker.kind, user, wrong_password, c.prefix)
            c.start("executor", TASKMILL_BROKER__URL=refused, **debug)
            c.start("api", TASKMILL_API__PORT=str(port), **debug)
            seen += await _traffic(base, writer.plaintext, admin.plaintext)
            await wait_for(lambda: _succeeded(db, 10), timeout=60)
            for path in ("/jobs?limit=100", "/events?limit=1000", "/metrics"):
                async with httpx.AsyncClient() as client:
                    response = await client.get(base + path, headers={"x-api-key": admin.plaintext})
                assert response.status_code == 200, path
                seen.append(response.content)
            c.stop_all()
            logs = c.logs()
            await broker.cleanup(c.prefix)
    finally:
        await _drop_broker_user(broker.kind, user)
    async with db.read() as conn:
        stored = json.dumps(
            [
                [str(value) for value in row]
                for table in (schema.events, schema.jobs, schema.job_runs, schema.api_keys)
                for row in (await conn.execute(select(table))).all()
            ]
        )
    # The wrong password was refused, and said so, without the password.
    assert "WRONGPASS" in logs or "ACCESS_REFUSED" in logs or "auth" in logs.lower(), logs[-3000:]
    responses = b"\n".join(seen)
    for secret in (db_password, broker_password, wrong_password, hmac_secret, *api_keys):
        assert secret not in logs, secret
        assert secret not in stored, secret
        assert secret.encode() not in responses, secret
    assert "***@" in logs or "taskmill starting on" not in logs


async def _traffic(base: str, writer: str, admin: str) -> list[bytes]:
    """Jobs created through the API (10 that succeed, 1 that fails), a forbidden call and
    failed authentications; every response body."""
    bodies: list[bytes] = []
    async with httpx.AsyncClient(timeout=10) as client:

        async def ready() -> bool:
            try:
                return (await client.get(f"{base}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(ready, timeout=30)
        calls = [
            *[("POST", "/jobs", writer, {"task_type": "sleepy", "payload": {}})] * 10,
            ("POST", "/jobs", writer, {"task_type": "declined", "payload": {}}),
            ("GET", "/api-keys", writer, None),
            ("GET", "/jobs", writer[:-1] + "0", None),
            ("GET", "/jobs", "tm_" + secrets.token_hex(20), None),
            ("GET", "/merchants", admin, None),
        ]
        for method, path, key, body in calls:
            response = await client.request(
                method, base + path, json=body, headers={"x-api-key": key}
            )
            assert response.status_code < 500, (path, response.text)
            bodies.append(response.content)
    return bodies
