"""Request and response bodies. Requests forbid unknown fields: nothing is mass-assigned."""

from __future__ import annotations

from datetime import datetime
from itertools import combinations
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from taskmill.core.errors import ValidationError
from taskmill.core.jobs import (
    MAX_PRIORITY,
    MAX_TIMEOUT_SECONDS,
    UNIQUE_KEY_MAX_LENGTH,
    DependencyFailurePolicy,
    JobStatus,
    RunOutcome,
    ScheduleType,
)
from taskmill.core.schedules import utc
from taskmill.core.templates import JobFailurePolicy, MisfirePolicy, OverlapPolicy
from taskmill.core.tenants import Scope
from taskmill.core.text import check_json

Name = Annotated[str, Field(min_length=1, max_length=200)]
QueueName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
Priority = Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
MaxAttempts = Annotated[int, Field(ge=1, le=100)]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)]
# The floor is the lowest ``scheduler.min_interval_seconds`` can be: a deployment's own,
# higher minimum is a setting the document cannot carry (422 naming interval_seconds).
MIN_INTERVAL_FLOOR = 0.001
Interval = Annotated[
    float,
    Field(
        ge=MIN_INTERVAL_FLOOR,
        le=366 * 86400,
        description="Seconds; at least `scheduler.min_interval_seconds` (default 1).",
    ),
]
CronText = Annotated[str, Field(min_length=1, max_length=200)]
ZoneName = Annotated[str, Field(min_length=1, max_length=64)]


def _in_utc(value: datetime) -> datetime:
    try:
        return utc(value)  # 0001-01-01T00:00+14:00 is before the first representable instant
    except ValidationError as exc:
        raise ValueError(exc.reason) from None


def _not_a_number(value: Any) -> Any:
    """A date-time is ISO 8601 text: pydantic would otherwise read a number (or numeric
    text such as ``0.5``) as Unix time, which the schema's ``date-time`` does not allow."""
    if isinstance(value, int | float) or (isinstance(value, str) and _numeric(value)):
        raise ValueError("must be an ISO 8601 date-time with an offset, not a number")
    return value


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# A time with an offset, normalised to UTC (every time is stored and compared in UTC).
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        """Every string of every request body, nested ones included, must be storable
        (UTF-8, no NUL): a lone surrogate or NUL is a 422, never a stored row."""
        try:
            check_json(info.field_name or "body", value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return value


# A field given a value (not absent, not null): the schedule rules below ignore nulls.
_GIVEN: dict[str, Any] = {"not": {"type": "null"}}


def _given(*names: str) -> dict[str, Any]:
    return {"required": list(names), "properties": dict.fromkeys(names, _GIVEN)}


def at_most_one_of(*names: str) -> dict[str, Any]:
    """JSON Schema for "no two of ``names`` given", so clients and fuzzers see the rule."""
    return {"not": {"anyOf": [_given(a, b) for a, b in combinations(names, 2)]}}


def exactly_one_of(*names: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of ``names`` given"."""
    return {"oneOf": [_given(name) for name in names]}


class _Response(BaseModel):
    model_config = ConfigDict(from_attributes=True)


_SCHEDULE_KINDS = ("run_at", "delay_seconds", "interval_seconds", "cron")


class JobCreate(_Request):
    """A job now (default), at ``run_at``, after ``delay_seconds``; or, with
    ``interval_seconds`` or ``cron``, a template that creates jobs."""

    model_config = ConfigDict(json_schema_extra=at_most_one_of(*_SCHEDULE_KINDS))

    task_type: Name
    payload: Any = None
    run_at: UtcDatetime | None = None
    delay_seconds: Annotated[float, Field(ge=0, le=366 * 86400)] | None = None
    interval_seconds: Interval | None = None
    cron: CronText | None = None
    timezone: ZoneName = "UTC"
    name: Name | None = None
    queue: QueueName | None = None
    priority: Priority | None = None
    max_attempts: MaxAttempts | None = None
    timeout_seconds: Timeout | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    unique_key: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=UNIQUE_KEY_MAX_LENGTH,
                pattern=r"^[A-Za-z0-9._:@/+=#-]+$",
                description="While this merchant's job with this key is scheduled, queued "
                "or running, the request answers that job (200) instead of creating one; "
                "once it finished, the key is free. Not with idempotency_key.",
            ),
        ]
        | None
    ) = None
    depends_on: Annotated[list[str], Field(max_length=100)] = []
    on_dependency_failure: DependencyFailurePolicy = DependencyFailurePolicy.CANCEL

    @model_validator(mode="after")
    def _one_schedule(self) -> JobCreate:
        given = [name for name in _SCHEDULE_KINDS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]} cannot be combined with {given[0]}")
        return self


class TemplateCreate(_Request):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("interval_seconds", "cron"))

    name: Name
    task_type: Name
    payload: Any = None
    interval_seconds: Interval | None = None
    cron: CronText | None = None
    timezone: ZoneName = "UTC"
    start_at: UtcDatetime | None = None
    end_at: UtcDatetime | None = None
    queue: QueueName | None = None
    priority: Priority | None = None
    max_attempts: MaxAttempts | None = None
    timeout_seconds: Timeout | None = None
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    on_job_failure: JobFailurePolicy = Field(
        default=JobFailurePolicy.KEEP,
        description="disable: switch the template off when one of its jobs fails for good",
    )

    @model_validator(mode="after")
    def _exactly_one_schedule(self) -> TemplateCreate:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_seconds or cron")
        return self


class SchedulePreview(_Request):
    """A schedule not stored yet (an edit being typed), checked as ``POST /templates``
    checks it: the same 422s, naming the same fields."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("interval_seconds", "cron"))

    interval_seconds: Interval | None = None
    cron: CronText | None = None
    timezone: ZoneName = "UTC"
    start_at: UtcDatetime | None = None
    count: Annotated[int, Field(ge=1, le=100)] = 10

    @model_validator(mode="after")
    def _exactly_one_schedule(self) -> SchedulePreview:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_seconds or cron")
        return self


class TemplatePatch(_Request):
    """Only the fields present change (``{"active": false}`` switches it off)."""

    name: Name | None = None
    payload: Any = None
    cron: CronText | None = None
    interval_seconds: Interval | None = None
    timezone: ZoneName | None = None
    start_at: UtcDatetime | None = None
    end_at: UtcDatetime | None = None
    queue: QueueName | None = None
    priority: Priority | None = None
    active: bool | None = None
    misfire_policy: MisfirePolicy | None = None
    overlap_policy: OverlapPolicy | None = None
    on_job_failure: JobFailurePolicy | None = None
    max_attempts: MaxAttempts | None = None
    timeout_seconds: Timeout | None = None


class CancelRequest(_Request):
    reason: Annotated[str, Field(min_length=1, max_length=1000)] = "cancelled via API"


class ProgressOut(_Response):
    fraction: float = Field(description="0 to 1")
    message: str | None
    reported_at: datetime


class JobOut(_Response):
    kind: Literal["job"] = "job"
    id: str
    task_type: str
    queue: str
    priority: int
    payload: Any
    status: JobStatus
    schedule_type: ScheduleType
    run_at: datetime
    scheduled_for: datetime | None
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    idempotency_key: str | None
    unique_key: str | None = None
    template_id: str | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    last_error: str | None = Field(
        description="The latest attempt's error; cleared when the job succeeds (each run "
        "keeps its own: GET /jobs/{id}/runs)"
    )
    cancel_reason: str | None
    on_dependency_failure: DependencyFailurePolicy
    waiting_reason: str | None = Field(
        default=None,
        description="GET /jobs/{id} only: why the job will not start, when taskmill can "
        "tell (its queue is paused; queued, and no live worker runs its task type; queued, "
        "and its task type is rate-limited)",
    )
    progress: ProgressOut | None = Field(
        default=None,
        description="GET /jobs/{id} only: the latest progress its current attempt's "
        "handler reported (ctx.progress), written at most once a second",
    )
    waited_seconds: float | None = Field(
        default=None,
        description="How long the latest attempt waited to start: from when it became due "
        "(run_at, or created_at if later) to started_at. Null until an attempt started, "
        "and while a retry waits",
    )


JobId = Annotated[str, Field(min_length=1, max_length=36)]
BULK_MAX = 100


class BulkJobs(_Request):
    """The jobs a bulk action acts on, each on its own: one id's refusal never stops
    the others."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=BULK_MAX)]

    @field_validator("ids")
    @classmethod
    def _distinct(cls, ids: list[str]) -> list[str]:
        if len(set(ids)) != len(ids):
            raise ValueError("must not repeat an id")
        return ids


class BulkCancel(BulkJobs):
    reason: Annotated[str, Field(min_length=1, max_length=1000)] = "cancelled via API"


class BulkOutcomeOut(_Response):
    """What the action did to one id: ``cancelled``/``retried``; ``not_found`` (also
    another merchant's job); ``conflict``: its status (given) did not allow it."""

    id: str
    outcome: Literal["cancelled", "retried", "not_found", "conflict"]
    status: JobStatus | None


class BulkOut(BaseModel):
    """One outcome per id, in the order given."""

    items: list[BulkOutcomeOut]


class FailureGroupOut(_Response):
    key: str = Field(description="The error's first line, numbers and ids masked")
    example: str = Field(description="The newest job's error, first line, as written")
    count: int
    task_types: list[str]
    newest_at: datetime | None
    job_ids: list[str] = Field(description="The group's jobs, newest first (at most 1,000)")


class FailuresOut(_Response):
    groups: list[FailureGroupOut]
    scanned: int = Field(description="How many failed jobs were read (the newest)")
    bounded: bool = Field(
        description="True when the read stopped at its bound (5,000): older failures "
        "are not counted"
    )


class JobLinkOut(_Response):
    """A job at the other end of a dependency."""

    id: str
    status: JobStatus
    task_type: str


class DependenciesOut(_Response):
    """What a job waits on (``upstream``) and what waits on it (``downstream``)."""

    job_id: str
    on_dependency_failure: DependencyFailurePolicy
    upstream: list[JobLinkOut]
    downstream: list[JobLinkOut]


class TemplateOut(_Response):
    kind: Literal["template"] = "template"
    id: str
    name: str
    task_type: str
    queue: str
    priority: int
    payload: Any
    schedule_type: ScheduleType
    cron_expression: str | None
    interval_seconds: float | None
    timezone: str
    start_at: datetime | None
    end_at: datetime | None
    active: bool
    next_run_at: datetime | None
    last_scheduled_for: datetime | None
    misfire_policy: MisfirePolicy
    overlap_policy: OverlapPolicy
    on_job_failure: JobFailurePolicy
    max_attempts: int
    timeout_seconds: float | None
    created_at: datetime
    last_error: str | None = None
    declared: bool = Field(
        default=False,
        description="Declared in code (@app.periodic): each start of the app reconciles it.",
    )


class AdminTemplateOut(TemplateOut):
    """A template as an administrator sees it: whose it is, too."""

    merchant_id: str


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None


class AdminTemplatePage(BaseModel):
    items: list[AdminTemplateOut]
    next_cursor: str | None


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class RunOut(_Response):
    job_id: str
    attempt: int
    worker_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: RunOutcome | None
    error: str | None
    duration_seconds: float | None


class EventOut(_Response):
    id: int
    occurred_at: datetime
    type: str
    actor: str
    job_id: str | None
    template_id: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class FireOut(_Response):
    at: datetime
    local: datetime
    dst_affected: bool


class RunningJobOut(_Response):
    """A job a worker runs now."""

    job_id: str
    task_type: str
    attempt: int
    started_at: datetime
    running_seconds: float = Field(description="Since it started, on the database clock.")


class WorkerOut(_Response):
    id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    status: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: list[RunningJobOut] = Field(
        default=[],
        description="The jobs it runs now that this key may see (its merchant's; every "
        "merchant's for an admin key), longest-running first, at most 50.",
    )
    running_total: int = Field(
        default=0, description="How many such jobs it runs in all (more than `running` holds)."
    )


class QueueOut(_Response):
    """One queue of the key's merchant."""

    queue: str
    state: Literal["active", "paused"] = Field(
        default="active",
        description="`paused`: executors leave its jobs queued until it is resumed.",
    )
    paused_at: datetime | None = None
    paused_by: str | None = Field(default=None, description="The key that paused it.")
    queued: int = Field(description="Jobs waiting for a worker (the queue's depth).")
    scheduled: int = Field(description="Jobs waiting for their time (or a dependency).")
    running: int
    oldest_due_age_seconds: float | None = Field(
        description="How long the oldest job due and not started has been due."
    )
    succeeded_5m: int
    failed_5m: int = Field(description="Jobs failed with no attempt left, last 5 minutes.")
    succeeded_60m: int
    failed_60m: int

    @classmethod
    def empty(cls, queue: str) -> QueueOut:
        """A queue without jobs of the key's merchant (a paused one is listed anyway)."""
        return cls(
            queue=queue,
            queued=0,
            scheduled=0,
            running=0,
            oldest_due_age_seconds=None,
            succeeded_5m=0,
            failed_5m=0,
            succeeded_60m=0,
            failed_60m=0,
        )


class QueuesOut(BaseModel):
    """The merchant's queues, by name, at most 200."""

    generated_at: datetime
    items: list[QueueOut]
    truncated: bool = Field(
        description="More than 200 queues, or more events in the last hour than one "
        "request scans: the list or the 60-minute counts are partial."
    )


class QueuePauseOut(_Response):
    """A queue's pause state: ``paused_at`` and ``paused_by`` (the key) while paused."""

    name: str
    paused: bool
    paused_at: datetime | None = None
    paused_by: str | None = None


class MerchantCreate(_Request):
    name: Name


class MerchantOut(_Response):
    id: str
    name: str
    created_at: datetime


class ApiKeyCreate(_Request):
    merchant_id: str
    name: Name
    scopes: Annotated[list[Scope], Field(min_length=1)]
    expires_at: UtcDatetime | None = None


class ApiKeyOut(_Response):
    id: str
    merchant_id: str
    name: str
    prefix: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(BaseModel):
    key: ApiKeyOut
    secret: str = Field(description="The API key itself. Shown once; store it now.")
