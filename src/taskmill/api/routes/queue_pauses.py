"""/queues/{name}/pause and /resume (admin: queues are shared by every merchant's jobs),
and the paused queues (any key that reads jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from taskmill.api.auth import Admin, JobsRead
from taskmill.api.responses import AUTHENTICATED, WRITE, errors
from taskmill.api.schemas import QueuePauseOut
from taskmill.core.queues import MAX_QUEUE_NAME

router = APIRouter(prefix="/queues", tags=["queues"])

QueuePath = Annotated[
    str, Path(min_length=1, max_length=MAX_QUEUE_NAME, pattern=r"^[A-Za-z0-9_.:-]+$")
]


@router.get("/paused", response_model=list[QueuePauseOut], responses=errors(*AUTHENTICATED))
async def list_paused(tenant: JobsRead) -> list[QueuePauseOut]:
    """The paused queues, by name."""
    return [
        QueuePauseOut(name=p.name, paused=True, paused_at=p.paused_at, paused_by=p.paused_by)
        for p in await tenant.paused_queues()
    ]


@router.post("/{name}/pause", response_model=QueuePauseOut, responses=errors(*WRITE))
async def pause_queue(name: QueuePath, admin: Admin) -> QueuePauseOut:
    """Pause the queue for every executor (within a second): its jobs stay ``queued`` or
    ``scheduled``, running ones finish. Pausing a paused queue changes nothing."""
    paused = await admin.admin().pause_queue(name)
    return QueuePauseOut(
        name=name, paused=True, paused_at=paused.paused_at, paused_by=paused.paused_by
    )


@router.post("/{name}/resume", response_model=QueuePauseOut, responses=errors(*WRITE))
async def resume_queue(name: QueuePath, admin: Admin) -> QueuePauseOut:
    """Resume the queue; resuming one that is not paused changes nothing."""
    await admin.admin().resume_queue(name)
    return QueuePauseOut(name=name, paused=False)
