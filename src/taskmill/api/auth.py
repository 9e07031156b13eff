"""``x-api-key`` authentication, scopes, and throttling of failed attempts (seed 001).

Every bad key (unknown, malformed, bad checksum, expired, revoked) gets the same 401;
a known key without the scope gets 403; a client with too many failures in a minute
gets 429 with ``Retry-After`` whatever key it sends next; so does a merchant over its
request rate (:mod:`taskmill.api.quota`), whichever of its keys it uses.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from taskmill.api.quota import MerchantQuota
from taskmill.core.tenants import ApiKey, Scope
from taskmill.runtime import Runtime
from taskmill.services.api_keys import ApiKeys
from taskmill.services.tenant import TenantScope

log = logging.getLogger(__name__)

api_key_header = APIKeyHeader(name="x-api-key", auto_error=False)
UNAUTHORIZED = "missing or invalid API key"
WINDOW_SECONDS = 60.0


class FailureLimiter:
    """Counts failed authentications per client over a sliding minute (in memory)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, deque[float]] = {}
        self._last_logged: dict[str, float] = {}

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds the client must wait, or ``None`` if it may try."""
        failures = self._failures.get(client)
        if not failures:
            return None
        while failures and now - failures[0] > WINDOW_SECONDS:
            failures.popleft()
        if len(failures) < self.per_minute:
            return None
        return max(1, math.ceil(WINDOW_SECONDS - (now - failures[0])))

    def failed(self, client: str, now: float) -> None:
        self._failures.setdefault(client, deque()).append(now)
        # One log line per client per minute, not one per guess.
        if now - self._last_logged.get(client, -math.inf) >= WINDOW_SECONDS:
            self._last_logged[client] = now
            log.warning("failed API key authentication from %s", client)


class Authenticator:
    def __init__(
        self, api_keys: ApiKeys, limiter: FailureLimiter, quota: MerchantQuota | None = None
    ) -> None:
        self.api_keys = api_keys
        self.limiter = limiter
        self.quota = quota

    async def authenticate(self, request: Request, plaintext: str | None) -> ApiKey:
        client = request.client.host if request.client else "unknown"
        now = time.monotonic()
        wait = self.limiter.retry_after(client, now)
        if wait is not None:
            raise HTTPException(429, "too many failed attempts", {"Retry-After": str(wait)})
        key = await self.api_keys.verify(plaintext) if plaintext else None
        if key is None:
            self.limiter.failed(client, now)
            raise HTTPException(401, UNAUTHORIZED)
        if self.quota is not None:
            wait = self.quota.take(key.merchant_id)
            if wait is not None:
                raise HTTPException(
                    429, "request rate limit of this merchant exceeded", {"Retry-After": str(wait)}
                )
        return key


def check_scope(scopes: Collection[Scope], scope: Scope) -> None:
    """403 unless ``scopes`` include ``scope`` (``admin`` includes every scope)."""
    if Scope.ADMIN not in scopes and scope not in scopes:
        raise HTTPException(403, f"this key lacks the {scope.value!r} scope")


def requires(scope: Scope) -> Callable[..., Awaitable[TenantScope]]:
    """A dependency that authenticates the key, checks ``scope`` and returns the tenant."""

    async def dependency(
        request: Request, plaintext: Annotated[str | None, Depends(api_key_header)]
    ) -> TenantScope:
        authenticator: Authenticator = request.app.state.authenticator
        runtime: Runtime = request.app.state.runtime
        key = await authenticator.authenticate(request, plaintext)
        check_scope(key.scopes, scope)
        return TenantScope(
            merchant_id=key.merchant_id,
            actor=f"api_key:{key.prefix}",
            scopes=key.scopes,
            jobs=runtime.jobs,
            api_keys=runtime.api_keys,
            waiters=runtime.waiters,
        )

    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the route meta-test
    return dependency


JobsRead = Annotated[TenantScope, Depends(requires(Scope.JOBS_READ))]
JobsWrite = Annotated[TenantScope, Depends(requires(Scope.JOBS_WRITE))]
TemplatesRead = Annotated[TenantScope, Depends(requires(Scope.TEMPLATES_READ))]
TemplatesWrite = Annotated[TenantScope, Depends(requires(Scope.TEMPLATES_WRITE))]
Admin = Annotated[TenantScope, Depends(requires(Scope.ADMIN))]
