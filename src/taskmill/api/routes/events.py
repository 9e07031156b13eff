"""/events (the audit log) and /workers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from taskmill.api.auth import JobsRead
from taskmill.api.responses import AUTHENTICATED, errors
from taskmill.api.schemas import EventOut, EventPage, RunningJobOut, WorkerOut
from taskmill.core.events import EventFilter, EventType

router = APIRouter(tags=["events"])


@router.get("/events", response_model=EventPage, responses=errors(*AUTHENTICATED))
async def list_events(
    tenant: JobsRead,
    job_id: Annotated[str | None, Query(max_length=36)] = None,
    template_id: Annotated[str | None, Query(max_length=36)] = None,
    type: Annotated[list[EventType] | None, Query()] = None,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """Events of this merchant in log order, each naming its actor; ``next_cursor`` is
    the ``after_id`` of the next page."""
    found = await tenant.events(
        EventFilter(
            job_id=job_id,
            template_id=template_id,
            types=type or (),
            after_id=after_id,
            limit=limit + 1,
        )
    )
    page = found[:limit]
    more = len(found) > limit
    return EventPage(
        items=[EventOut.model_validate(e) for e in page],
        next_cursor=str(page[-1].id) if more else None,
    )


@router.get(
    "/workers", response_model=list[WorkerOut], tags=["workers"], responses=errors(*AUTHENTICATED)
)
async def list_workers(tenant: JobsRead) -> list[WorkerOut]:
    """Workers, live and dead, with their last heartbeat (shared infrastructure), and
    the jobs each runs now: this key's merchant's only (every merchant's for an admin
    key), at most 50 per worker, with their total."""
    loads = await tenant.running_by_worker()
    found = []
    for worker in await tenant.workers():
        out = WorkerOut.model_validate(worker)
        load = loads.get(worker.id)
        if load is not None:
            out.running = [RunningJobOut.model_validate(j) for j in load.jobs]
            out.running_total = load.total
        found.append(out)
    return found
