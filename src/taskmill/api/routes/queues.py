"""/queues: the key's merchant's queues (the monitoring UI's queues page), the paused
queues, and pausing and resuming one (admin: queues are shared by every merchant)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from taskmill.api.auth import Admin, JobsRead
from taskmill.api.responses import AUTHENTICATED, WRITE, errors
from taskmill.api.schemas import QueueOut, QueuePauseOut, QueuesOut
from taskmill.core.queues import MAX_QUEUE_NAME

router = APIRouter(tags=["queues"])

QueuePath = Annotated[
    str, Path(min_length=1, max_length=MAX_QUEUE_NAME, pattern=r"^[A-Za-z0-9_.:-]+$")
]


@router.get("/queues", response_model=QueuesOut, responses=errors(*AUTHENTICATED))
async def list_queues(tenant: JobsRead) -> QueuesOut:
    """Per queue of this merchant (at most 200, by name): its state (``paused`` with when
    and by whom, or ``active``), jobs queued, scheduled and running now, the oldest due
    job's age, and jobs succeeded and failed in the last 5 and 60 minutes. Paused queues
    are listed even without jobs of this merchant. Bounded queries only; ``truncated``
    says when the list or the counts are partial."""
    found = await tenant.queues()
    paused = {p.name: p for p in await tenant.paused_queues()}
    items = [QueueOut.model_validate(q) for q in found.queues]
    listed = {item.queue for item in items}
    items += [QueueOut.empty(name) for name in paused if name not in listed]
    for item in items:
        pause = paused.get(item.queue)
        if pause is not None:
            item.state, item.paused_at, item.paused_by = "paused", pause.paused_at, pause.paused_by
    return QueuesOut(
        generated_at=found.now,
        items=sorted(items, key=lambda item: item.queue),
        truncated=found.truncated,
    )


@router.get("/queues/paused", response_model=list[QueuePauseOut], responses=errors(*AUTHENTICATED))
async def list_paused(tenant: JobsRead) -> list[QueuePauseOut]:
    """The paused queues, by name (every merchant's: queues are shared)."""
    return [
        QueuePauseOut(name=p.name, paused=True, paused_at=p.paused_at, paused_by=p.paused_by)
        for p in await tenant.paused_queues()
    ]


@router.post("/queues/{name}/pause", response_model=QueuePauseOut, responses=errors(*WRITE))
async def pause_queue(name: QueuePath, admin: Admin) -> QueuePauseOut:
    """Pause the queue for every executor (within a second): its jobs stay ``queued`` or
    ``scheduled``, running ones finish. Pausing a paused queue changes nothing."""
    paused = await admin.admin().pause_queue(name)
    return QueuePauseOut(
        name=name, paused=True, paused_at=paused.paused_at, paused_by=paused.paused_by
    )


@router.post("/queues/{name}/resume", response_model=QueuePauseOut, responses=errors(*WRITE))
async def resume_queue(name: QueuePath, admin: Admin) -> QueuePauseOut:
    """Resume the queue; resuming one that is not paused changes nothing."""
    await admin.admin().resume_queue(name)
    return QueuePauseOut(name=name, paused=False)
