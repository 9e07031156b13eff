"""Tenants (merchants) and their API keys (seed 001)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias


class _AllMerchants(enum.Enum):
    ALL = "all merchants"


ALL_MERCHANTS: Final = _AllMerchants.ALL
"""What an operator's read passes instead of a merchant id: no tenant filter. Every store
read takes a :data:`MerchantScope` without a default, so an unscoped read is spelled out."""
MerchantScope: TypeAlias = str | Literal[_AllMerchants.ALL]


class Scope(enum.StrEnum):
    """What an API key may do. ``admin`` implies every other scope."""

    JOBS_READ = "jobs:read"
    JOBS_WRITE = "jobs:write"
    TEMPLATES_READ = "templates:read"
    TEMPLATES_WRITE = "templates:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: never the secret itself, only its keyed hash."""

    id: str
    merchant_id: str
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def usable_at(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at
