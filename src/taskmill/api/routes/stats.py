"""/stats: the key's merchant at a glance, for the monitoring UI's overview."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from taskmill.api.auth import JobsRead
from taskmill.api.responses import AUTHENTICATED, errors
from taskmill.services.jobs import STATS_WINDOW_MINUTES

router = APIRouter(tags=["stats"])


class MinuteOut(BaseModel):
    """Finished attempts in one minute."""

    minute: datetime = Field(description="Start of the minute (UTC).")
    succeeded: int
    failed: int = Field(description="Attempts that failed with no attempt left.")
    retried: int = Field(description="Failed attempts scheduled to run again.")
    cancelled: int


class StartLagOut(BaseModel):
    """Due-to-start lag of the merchant's recent jobs that have started."""

    samples: int = Field(description="Recently created jobs that have started.")
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None


class StatsOut(BaseModel):
    """The merchant's jobs now, over the last hour, and their start lag."""

    generated_at: datetime
    window_minutes: int
    unfinished: dict[str, int] = Field(description="Jobs scheduled, queued, running now.")
    due: int = Field(description="Jobs due and not running yet (queued, or run_at passed).")
    oldest_due_age_seconds: float | None
    window_totals: dict[str, int] = Field(
        description="succeeded, failed, retried, cancelled in the window."
    )
    per_minute: list[MinuteOut]
    start_lag: StartLagOut
    truncated: bool = Field(
        description="The window had more events than one request scans; totals are partial."
    )
    unserved_task_types: dict[str, int] = Field(
        default_factory=dict,
        description="Queued jobs per task type that no live worker runs: they wait until "
        "a worker that registered the type starts.",
    )


@router.get("/stats", response_model=StatsOut, responses=errors(*AUTHENTICATED))
async def get_stats(tenant: JobsRead) -> StatsOut:
    """Unfinished jobs now, finished attempts per minute over the last hour, and the
    start lag of recent jobs, for this key's merchant. Bounded queries only."""
    found = await tenant.stats()
    lag = found.start_lag
    return StatsOut(
        generated_at=found.now,
        window_minutes=STATS_WINDOW_MINUTES,
        unfinished={status.value: n for status, n in found.unfinished.items()},
        due=found.due,
        oldest_due_age_seconds=found.oldest_due_age_seconds,
        window_totals=found.window_totals,
        per_minute=[MinuteOut(minute=m.minute, **m.counts) for m in found.per_minute],
        start_lag=StartLagOut(
            samples=lag.samples, p50_seconds=lag.p50, p95_seconds=lag.p95, max_seconds=lag.max
        ),
        truncated=found.truncated,
        unserved_task_types=found.unserved,
    )
