"""/queues: the key's merchant's queues, for the monitoring UI's queues page."""

from __future__ import annotations

from fastapi import APIRouter

from taskmill.api.auth import JobsRead
from taskmill.api.responses import AUTHENTICATED, errors
from taskmill.api.schemas import QueueOut, QueuesOut

router = APIRouter(tags=["queues"])


@router.get("/queues", response_model=QueuesOut, responses=errors(*AUTHENTICATED))
async def list_queues(tenant: JobsRead) -> QueuesOut:
    """Per queue of this merchant (at most 200, by name): jobs queued, scheduled and
    running now, the oldest due job's age, and jobs succeeded and failed in the last 5
    and 60 minutes. Bounded queries only; ``truncated`` says when the list or the
    counts are partial."""
    found = await tenant.queues()
    return QueuesOut(
        generated_at=found.now,
        items=[QueueOut.model_validate(q) for q in found.queues],
        truncated=found.truncated,
    )
