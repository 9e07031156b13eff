"""Rate limits in SQL (ADR 0014): each limited task type's token bucket is a row of
``rate_limits``; a claim that may take jobs of the type locks the row, refills it by the
database clock, takes at most its whole tokens, and writes back what it used, all in the
claim's transaction. Claims of one limited type therefore queue on its row (SQLite's one
writer does the same), which makes the limit exact across executors and replicas; claims
of other task types never touch it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmill.core.jobs import Job
from taskmill.core.rate_limits import RateLimit
from taskmill.store.claims import ClaimParams, in_claim_order, pick_rate_limited, start_picked
from taskmill.store.database import Database
from taskmill.store.schema import rate_limits

# A bucket holding 0.9999999 tokens after float arithmetic holds one.
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Claimed:
    """A rate-limited claim's jobs, and how long until a limit that held jobs back has its
    next token (``None``: no limit held anything back)."""

    jobs: list[Job]
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class StoredLimit:
    """A task type's limit as stored, and the executor whose declaration wrote it."""

    task_type: str
    limit: RateLimit
    declared_by: str


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A limit a declaration changed, in words; ``replaced``: it undid another
    executor's declaration (worth a warning)."""

    text: str
    replaced: bool


async def declare(
    db: Database, declared: Mapping[str, RateLimit | None], *, worker_id: str, now: datetime
) -> list[LimitChange]:
    """Store the limits an executor starting with these task types declares (``None``:
    no limit, the row goes). The last executor to start wins (ADR 0014); returns each
    limit it changed, so the executor can log whose declaration it replaced."""

    async def declare_in(conn: AsyncConnection) -> list[LimitChange]:
        stored = await _stored(conn, list(declared))
        changes = []
        for task_type, limit in sorted(declared.items()):
            before = stored.get(task_type)
            if limit is None:
                if before is not None:
                    await conn.execute(
                        delete(rate_limits).where(rate_limits.c.task_type == task_type)
                    )
                    text = (
                        f"{task_type}: limit {_describe(before.limit)} (declared by "
                        f"{before.declared_by}) removed"
                    )
                    changes.append(LimitChange(text, replaced=True))
                continue
            if before is not None and _same(before.limit, limit):
                continue
            values = {
                "per_second": limit.per_second,
                "burst": limit.burst,
                "declared_by": worker_id,
                "declared_at": now,
            }
            # A new bucket starts full; a changed one keeps its tokens, within the new burst.
            stmt = db.dialect.upsert(
                rate_limits,
                ["task_type"],
                {
                    **values,
                    "task_type": task_type,
                    "tokens": float(limit.burst),
                    "refilled_at": now,
                },
                values,
            )
            await conn.execute(stmt)
            was = (
                f"replacing {_describe(before.limit)} declared by {before.declared_by}"
                if before is not None
                else "new"
            )
            text = f"{task_type}: limit {_describe(limit)} ({was})"
            changes.append(LimitChange(text, replaced=before is not None))
        return changes

    return await db.write(declare_in)


def _same(a: RateLimit, b: RateLimit) -> bool:
    return math.isclose(a.per_second, b.per_second) and a.burst == b.burst


def _describe(limit: RateLimit) -> str:
    return f"{limit.per_second:g}/s burst {limit.burst}"


async def _stored(conn: AsyncConnection, task_types: Sequence[str]) -> dict[str, StoredLimit]:
    stmt = select(rate_limits).where(rate_limits.c.task_type.in_(list(task_types)))
    return {row.task_type: _to_stored(row) for row in (await conn.execute(stmt)).all()}


def _to_stored(row: Row[Any]) -> StoredLimit:
    limit = RateLimit(per_second=row.per_second, burst=row.burst)
    return StoredLimit(row.task_type, limit, row.declared_by)


async def limits(db: Database, task_types: Sequence[str]) -> dict[str, StoredLimit]:
    """The stored limits of ``task_types`` (those without a limit are absent)."""
    if not task_types:
        return {}
    async with db.read() as conn:
        return await _stored(conn, task_types)


# Starts the jobs a claim picked and locked, in its transaction (the driver's own form).
StartPicked = Callable[[AsyncConnection, ClaimParams, Sequence[str]], Awaitable[list[Job]]]


async def claim(db: Database, params: ClaimParams, start: StartPicked | None = None) -> Claimed:
    """``claims.claim`` for a worker some of whose task types are rate-limited: each
    limited type contributes at most the whole tokens its bucket holds now. ``start``:
    how the driver starts the picked jobs (default: the shared ``transition()`` form)."""

    async def shared_start(
        conn: AsyncConnection, params: ClaimParams, ids: Sequence[str]
    ) -> list[Job]:
        return in_claim_order(await start_picked(conn, db, params, ids))

    begin = start or shared_start

    async def claim_in(conn: AsyncConnection) -> tuple[list[Job], float | None]:
        buckets = await _lock_buckets(conn, db, params.task_types)
        allowance = {b.task_type: b.whole() for b in buckets}
        ids = await pick_rate_limited(conn, db, params, allowance)
        rows = await begin(conn, params, ids) if ids else []
        used: dict[str, int] = {}
        for row in rows:
            used[row.task_type] = used.get(row.task_type, 0) + 1
        retry_after = None
        for bucket in buckets:
            taken = used.get(bucket.task_type, 0)
            if taken:
                await conn.execute(
                    update(rate_limits)
                    .where(rate_limits.c.task_type == bucket.task_type)
                    .values(tokens=bucket.tokens - taken, refilled_at=bucket.at)
                )
            # The limit held jobs back only if it gave less than the claim could take.
            if taken >= bucket.whole() and len(rows) < params.limit:
                wait = bucket.wait_for_next(taken)
                retry_after = wait if retry_after is None else min(retry_after, wait)
        return rows, retry_after

    started, retry_after = await db.write(claim_in)
    return Claimed(started, retry_after)


@dataclass(frozen=True, slots=True)
class _Bucket:
    task_type: str
    per_second: float
    tokens: float  # refilled up to ``at``
    at: datetime

    def whole(self) -> int:
        return max(0, math.floor(self.tokens + _EPSILON))

    def wait_for_next(self, taken: int) -> float:
        """Seconds until the bucket, less ``taken``, holds a whole token again."""
        left = self.tokens - taken
        return max(0.0, (1.0 - (left - math.floor(left + _EPSILON))) / self.per_second)


async def _lock_buckets(
    conn: AsyncConnection, db: Database, task_types: Sequence[str]
) -> list[_Bucket]:
    """The buckets of ``task_types``, locked until the claim commits (in task type order,
    so two claims never wait on each other's rows) and refilled by the database clock."""
    stmt = (
        select(rate_limits, db.dialect.db_now().label("now"))
        .where(rate_limits.c.task_type.in_(list(task_types)))
        .order_by(rate_limits.c.task_type)
    )
    if db.dialect.supports_skip_locked:  # PostgreSQL; SQLite has one writer anyway
        stmt = stmt.with_for_update(of=rate_limits)
    buckets = []
    for row in (await conn.execute(stmt)).all():
        # statement_timestamp() is taken before the lock is granted: the holder before
        # us may have written a later time, and the clock must never go back.
        at = max(row.now, row.refilled_at)
        elapsed = (at - row.refilled_at).total_seconds()
        tokens = min(float(row.burst), row.tokens + elapsed * row.per_second)
        buckets.append(_Bucket(row.task_type, row.per_second, tokens, at))
    return buckets
