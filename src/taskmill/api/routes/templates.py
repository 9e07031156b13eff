"""/templates: create, list, get, PATCH (seed 001's ``{"active": false}``), delete, preview;
and /schedules/preview: the fires of a schedule being edited, before it is stored."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from taskmill.api.auth import TemplatesRead, TemplatesWrite
from taskmill.api.paging import Cursor, decode_cursor, keyset_page
from taskmill.api.responses import AUTHENTICATED, BODY, WRITE, errors
from taskmill.api.schemas import (
    FireOut,
    SchedulePreview,
    TemplateCreate,
    TemplateOut,
    TemplatePage,
    TemplatePatch,
)
from taskmill.core.templates import Template
from taskmill.services.scheduling import ScheduleRequest
from taskmill.services.templates import ScheduleDraft, TemplateUpdate

router = APIRouter(prefix="/templates", tags=["templates"])
# Not under /templates: any /templates/<word> is also /templates/{template_id} (an id or a
# template's name), so its methods would mix with that path's.
schedules = APIRouter(prefix="/schedules", tags=["templates"])

_PATCH_RENAMES = {"cron": "cron_expression"}


@router.post("", status_code=201, response_model=TemplateOut, responses=errors(409, *WRITE, *BODY))
async def create_template(
    body: TemplateCreate, tenant: TemplatesWrite, response: Response
) -> TemplateOut:
    scheduled = await tenant.schedule(
        ScheduleRequest(
            task=body.task_type,
            payload=body.payload,
            interval=body.interval_seconds,
            cron=body.cron,
            timezone=body.timezone,
            name=body.name,
            start_at=body.start_at,
            end_at=body.end_at,
            queue=body.queue,
            priority=body.priority,
            max_retries=None if body.max_attempts is None else body.max_attempts - 1,
            timeout=body.timeout_seconds,
            misfire_policy=body.misfire_policy,
            overlap_policy=body.overlap_policy,
            on_job_failure=body.on_job_failure,
        )
    )
    assert isinstance(scheduled.item, Template)  # interval or cron always makes a template
    response.headers["Location"] = f"/templates/{scheduled.item.id}"
    return TemplateOut.model_validate(scheduled.item)


@schedules.post("/preview", response_model=list[FireOut], responses=errors(*AUTHENTICATED, *BODY))
async def preview_schedule(body: SchedulePreview, tenant: TemplatesRead) -> list[FireOut]:
    """The next ``count`` fire times of a schedule not stored yet (as the user types an
    edit), in UTC and local time, DST-affected ones flagged; checked as creating a
    template checks it (the same 422s). Stores nothing."""
    draft = ScheduleDraft(body.cron, body.interval_seconds, body.timezone, body.start_at)
    return [FireOut.model_validate(f) for f in tenant.preview_schedule(draft, body.count)]


@router.get("", response_model=TemplatePage, responses=errors(*AUTHENTICATED))
async def list_templates(
    tenant: TemplatesRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
) -> TemplatePage:
    """Templates oldest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    found = await tenant.list_templates(limit + 1, decode_cursor(cursor) if cursor else None)
    page, next_cursor = keyset_page(found, limit)
    return TemplatePage(
        items=[TemplateOut.model_validate(t) for t in page], next_cursor=next_cursor
    )


@router.get("/{template_id}", response_model=TemplateOut, responses=errors(404, *AUTHENTICATED))
async def get_template(template_id: str, tenant: TemplatesRead) -> TemplateOut:
    return TemplateOut.model_validate(await tenant.get_template(template_id))


@router.patch(
    "/{template_id}", response_model=TemplateOut, responses=errors(404, 409, *WRITE, *BODY)
)
async def update_template(
    template_id: str, body: TemplatePatch, tenant: TemplatesWrite
) -> TemplateOut:
    """Change only the fields sent; schedule changes and ``active`` recompute
    ``next_run_at``."""
    changes = {_PATCH_RENAMES.get(k, k): getattr(body, k) for k in body.model_fields_set}
    if "max_attempts" in changes and changes["max_attempts"] is None:
        del changes["max_attempts"]
    updated = await tenant.update_template(template_id, TemplateUpdate(**changes))
    return TemplateOut.model_validate(updated)


@router.delete("/{template_id}", status_code=204, responses=errors(404, 409, *WRITE))
async def delete_template(template_id: str, tenant: TemplatesWrite) -> Response:
    """Delete the template; jobs it already created stay."""
    await tenant.delete_template(template_id)
    return Response(status_code=204)


@router.get(
    "/{template_id}/preview", response_model=list[FireOut], responses=errors(404, *AUTHENTICATED)
)
async def preview(
    template_id: str, tenant: TemplatesRead, count: Annotated[int, Query(ge=1, le=1000)] = 10
) -> list[FireOut]:
    """The next ``count`` fire times, in UTC and local time, DST-affected ones flagged."""
    return [FireOut.model_validate(f) for f in await tenant.preview(template_id, count)]
