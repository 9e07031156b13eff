"""/jobs: create (any schedule kind), list and search, get, cancel, retry (one or many),
run now, failures grouped by error, runs, dependencies."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from taskmill.api.auth import JobsRead, JobsWrite, check_scope
from taskmill.api.paging import Cursor, decode_cursor, keyset_page
from taskmill.api.responses import AUTHENTICATED, BODY, WRITE, errors
from taskmill.api.schemas import (
    BulkCancel,
    BulkJobs,
    BulkOut,
    BulkOutcomeOut,
    CancelRequest,
    DependenciesOut,
    FailureGroupOut,
    FailuresOut,
    JobCreate,
    JobOut,
    JobPage,
    ProgressOut,
    RunOut,
    TemplateOut,
    UtcDatetime,
)
from taskmill.core.jobs import SEARCH_MAX_LENGTH, Job, JobFilter, JobStatus
from taskmill.core.tenants import Scope
from taskmill.services.scheduling import ScheduleRequest

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=JobOut | TemplateOut,
    responses={
        200: {
            "description": "An earlier job with the same idempotency_key, or the unfinished "
            "job holding the unique_key"
        },
        **errors(409, *WRITE, *BODY),
    },
)
async def create_job(
    body: JobCreate, tenant: JobsWrite, response: Response
) -> JobOut | TemplateOut:
    """Schedule a job now, at ``run_at`` or after ``delay_seconds``; with
    ``interval_seconds`` or ``cron`` this creates a template (``kind: "template"``), which
    also needs ``templates:write``: the scope that lists, changes and deletes it."""
    if body.interval_seconds is not None or body.cron is not None:
        check_scope(tenant.scopes, Scope.TEMPLATES_WRITE)
    run_at = body.run_at
    if body.delay_seconds is not None:
        run_at = tenant.clock.now() + timedelta(seconds=body.delay_seconds)
    scheduled = await tenant.schedule(
        ScheduleRequest(
            task=body.task_type,
            payload=body.payload,
            run_at=run_at,
            interval=body.interval_seconds,
            cron=body.cron,
            timezone=body.timezone,
            name=body.name,
            queue=body.queue,
            priority=body.priority,
            max_retries=None if body.max_attempts is None else body.max_attempts - 1,
            timeout=body.timeout_seconds,
            idempotency_key=body.idempotency_key,
            unique_key=body.unique_key,
            depends_on=body.depends_on,
            on_dependency_failure=body.on_dependency_failure,
        )
    )
    if not scheduled.created:
        response.status_code = 200
    if isinstance(scheduled.item, Job):
        response.headers["Location"] = f"/jobs/{scheduled.item.id}"
        return JobOut.model_validate(scheduled.item)
    response.headers["Location"] = f"/templates/{scheduled.item.id}"
    return TemplateOut.model_validate(scheduled.item)


@router.get("", response_model=JobPage, responses=errors(*AUTHENTICATED))
async def list_jobs(
    tenant: JobsRead,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    task_type: Annotated[str | None, Query(max_length=200)] = None,
    template_id: Annotated[str | None, Query(max_length=36)] = None,
    created_after: UtcDatetime | None = None,
    created_before: UtcDatetime | None = None,
    run_after: UtcDatetime | None = None,
    run_before: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor = None,
    order: Literal["desc", "asc"] = "desc",
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=SEARCH_MAX_LENGTH,
            description="A job id (whole), or text in the task type or in the payload's "
            "JSON (case-insensitive). Payload text is searched by reading the jobs the "
            "other filters leave: narrow them on a large history.",
        ),
    ] = None,
) -> JobPage:
    """Jobs newest first (``order=asc``: oldest first); pass ``next_cursor`` back as
    ``cursor``, with the same ``order``, for the next page."""
    jobs = await tenant.list_jobs(
        JobFilter(
            statuses=status or (),
            task_type=task_type,
            template_id=template_id,
            created_after=created_after,
            created_before=created_before,
            run_after=run_after,
            run_before=run_before,
            limit=limit + 1,
            after=decode_cursor(cursor, order) if cursor else None,
            newest_first=order == "desc",
            search=q,
        )
    )
    page, next_cursor = keyset_page(jobs, limit, order)
    return JobPage(items=[JobOut.model_validate(j) for j in page], next_cursor=next_cursor)


@router.get("/failures", response_model=FailuresOut, responses=errors(*AUTHENTICATED))
async def list_failures(
    tenant: JobsRead,
    since: UtcDatetime | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> FailuresOut:
    """Failed jobs grouped by their error's first line, numbers and ids masked ("timeout
    after 31s" and "after 32s" are one group), the largest groups first. Reads the newest
    5,000 failed jobs that finished at or after ``since`` (``bounded`` says when there
    were more)."""
    found = await tenant.failures(since, limit)
    return FailuresOut(
        groups=[FailureGroupOut.model_validate(g) for g in found.groups],
        scanned=found.scanned,
        bounded=found.bounded,
    )


@router.post("/bulk/cancel", response_model=BulkOut, responses=errors(*WRITE, *BODY))
async def cancel_jobs(body: BulkCancel, tenant: JobsWrite) -> BulkOut:
    """Cancel up to 100 jobs, each on its own: the answer lists every id's outcome
    (``cancelled``, ``not_found``, or ``conflict`` with the status that refused it)."""
    done = await tenant.cancel_jobs(body.ids, body.reason)
    return BulkOut(items=[BulkOutcomeOut.model_validate(d) for d in done])


@router.post("/bulk/retry", response_model=BulkOut, responses=errors(*WRITE, *BODY))
async def retry_jobs(body: BulkJobs, tenant: JobsWrite) -> BulkOut:
    """Give up to 100 failed jobs one more attempt now, each on its own (``retried``,
    ``not_found``, or ``conflict`` with the status of a job that is not failed)."""
    done = await tenant.retry_jobs(body.ids)
    return BulkOut(items=[BulkOutcomeOut.model_validate(d) for d in done])


# The longest ``GET /jobs/{id}?wait=`` holds a request (a long poll, not a stream).
MAX_WAIT_SECONDS = 60


@router.get("/{job_id}", response_model=JobOut, responses=errors(404, *AUTHENTICATED))
async def get_job(
    job_id: str,
    tenant: JobsRead,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long poll: answer as soon as the job finishes (succeeded, failed "
            f"or cancelled), or after this many seconds (0-{MAX_WAIT_SECONDS}) with the "
            "job as it is then: its `status` says which. 0 (default): at once.",
        ),
    ] = 0,
) -> JobOut:
    """The job; ``waiting_reason`` says when it will not start (its queue is paused, no
    live worker runs its task type, or its task type is rate-limited); ``progress``, what
    its handler last reported. With ``wait``, the answer comes when the job finishes or
    the wait ends, whichever is first (an unknown job, or another merchant's, is 404 at
    once)."""
    job = await tenant.wait_for_job(job_id, wait)
    out = JobOut.model_validate(job)
    out.waiting_reason = await tenant.waiting_reason(job)
    progress = await tenant.progress(job_id)
    if progress is not None:
        out.progress = ProgressOut.model_validate(progress)
    return out


@router.post("/{job_id}/cancel", response_model=JobOut, responses=errors(404, 409, *WRITE, *BODY))
async def cancel_job(job_id: str, tenant: JobsWrite, body: CancelRequest | None = None) -> JobOut:
    """Cancel a scheduled, queued or running job (409 if it already finished)."""
    reason = (body or CancelRequest()).reason
    return JobOut.model_validate(await tenant.cancel_job(job_id, reason))


@router.post("/{job_id}/retry", response_model=JobOut, responses=errors(404, 409, *WRITE, *BODY))
async def retry_job(job_id: str, tenant: JobsWrite) -> JobOut:
    """Give a failed job one more attempt now (409 unless it is ``failed``)."""
    return JobOut.model_validate(await tenant.retry_job(job_id))


@router.post("/{job_id}/run-now", response_model=JobOut, responses=errors(404, 409, *WRITE))
async def run_now(job_id: str, tenant: JobsWrite) -> JobOut:
    """Queue a scheduled job now instead of at its ``run_at`` (409 unless it is
    ``scheduled``, or while it waits on a job it depends on)."""
    return JobOut.model_validate(await tenant.run_now(job_id))


@router.get("/{job_id}/runs", response_model=list[RunOut], responses=errors(404, *AUTHENTICATED))
async def list_runs(job_id: str, tenant: JobsRead) -> list[RunOut]:
    return [RunOut.model_validate(r) for r in await tenant.runs(job_id)]


@router.get(
    "/{job_id}/dependencies",
    response_model=DependenciesOut,
    responses=errors(404, *AUTHENTICATED),
)
async def get_dependencies(job_id: str, tenant: JobsRead) -> DependenciesOut:
    """The jobs this one waits on (``upstream``) and those waiting on it (``downstream``)."""
    return DependenciesOut.model_validate(await tenant.dependencies(job_id))
