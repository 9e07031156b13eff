"""API keys: issue (shown once), verify (keyed hash, constant time), revoke.

A key reads ``tm_<lookup>_<secret><checksum>``: ``tm_<lookup>`` is the public prefix
stored beside the hash, the secret is 32 random bytes (base64url), and an 8-hex CRC32
checksum lets typos and random guesses be rejected without touching the database, as
GitHub's tokens do. Only HMAC-SHA-256(server secret, key) is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from taskmill.core.clock import Clock
from taskmill.core.errors import ValidationError
from taskmill.core.tenants import ApiKey, Merchant, MerchantScope, Scope
from taskmill.store.protocol import NewApiKey, Store

KEY_PREFIX = "tm_"
_KEY_RE = re.compile(r"^(tm_[a-z2-7]{8})_([A-Za-z0-9_-]{43})([0-9a-f]{8})$")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``plaintext`` exists only here, to be shown once."""

    key: ApiKey
    plaintext: str


def _checksum(body: str) -> str:
    return f"{zlib.crc32(body.encode()):08x}"


def new_plaintext() -> tuple[str, str]:
    """A fresh key and its public prefix."""
    lookup = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(8))
    prefix = f"{KEY_PREFIX}{lookup}"
    body = f"{prefix}_{secrets.token_urlsafe(32)}"
    return body + _checksum(body), prefix


def parse(plaintext: str) -> str | None:
    """The key's prefix if it is well formed and its checksum matches, else ``None``."""
    match = _KEY_RE.match(plaintext)
    if match is None:
        return None
    prefix, secret, checksum = match.groups()
    if not hmac.compare_digest(_checksum(f"{prefix}_{secret}"), checksum):
        return None
    return prefix


class ApiKeys:
    """Issues and verifies keys with the server's HMAC secret."""

    def __init__(self, store: Store, clock: Clock, hmac_secret: bytes) -> None:
        if len(hmac_secret) < 32:
            raise ValueError("the API key HMAC secret must be at least 32 bytes")
        self.store = store
        self.clock = clock
        self._secret = hmac_secret

    def _hash(self, plaintext: str) -> str:
        return hmac.new(self._secret, plaintext.encode(), hashlib.sha256).hexdigest()

    async def issue(
        self,
        merchant_id: str,
        name: str,
        scopes: Collection[Scope],
        *,
        expires_at: datetime | None = None,
        actor: str,
    ) -> IssuedKey:
        if not name.strip():
            raise ValidationError("name", "must not be empty")
        if not scopes:
            raise ValidationError("scopes", "must name at least one scope")
        try:
            scopes = {Scope(s) for s in scopes}
        except ValueError as exc:
            raise ValidationError("scopes", str(exc)) from exc
        now = self.clock.now()
        if expires_at is not None and expires_at <= now:
            raise ValidationError("expires_at", "must be in the future")
        plaintext, prefix = new_plaintext()
        new = NewApiKey(merchant_id, name, prefix, self._hash(plaintext), scopes, expires_at)
        key = await self.store.create_api_key(new, actor=actor, now=now)
        return IssuedKey(key, plaintext)

    async def verify(self, plaintext: str) -> ApiKey | None:
        """The key if ``plaintext`` is a valid, unexpired, unrevoked key; else ``None``.

        Malformed keys and bad checksums are rejected before any database query.
        """
        prefix = parse(plaintext)
        if prefix is None:
            return None
        found = await self.store.find_api_key(prefix)
        if found is None:
            return None
        key, stored_hash = found
        if not hmac.compare_digest(self._hash(plaintext), stored_hash):
            return None
        now = self.clock.now()
        if not key.usable_at(now):
            return None
        await self.store.touch_api_key(key, now)
        return key

    # -- tenants: an administrator's management of merchants and their keys ------------

    async def create_merchant(self, name: str) -> Merchant:
        return await self.store.create_merchant(name, now=self.clock.now())

    async def list_merchants(self) -> list[Merchant]:
        return await self.store.list_merchants()

    async def list_keys(self, merchant_id: MerchantScope) -> list[ApiKey]:
        return await self.store.list_api_keys(merchant_id)

    async def revoke(self, key_id: str, *, actor: str) -> ApiKey:
        return await self.store.revoke_api_key(key_id, actor=actor, now=self.clock.now())
